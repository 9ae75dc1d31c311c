"""Latent space: a 2-D/3-D PCA of test-set latent codes, coloured by class, with the PEDCC centroids."""
import streamlit as st

from app import figures, loaders, registry, widgets
from csae_core import geometry

st.title("Latent space")
st.caption("Each dot is the latent code of one test image, projected to its first principal components. A CSAE "
           "pulls each class onto its predefined centroid (black diamonds, projected with the same PCA).")

entries = registry.finals(loaders.model_entries())
if not entries:
    widgets.no_models("the latent space view")
    st.stop()

c = st.columns([3, 1, 1])
entry = widgets.choose_model(entries, key="latent_model", where=c[0])
dims = c[1].radio("Projection", [2, 3], format_func=lambda k: f"{k}-D", horizontal=True, key="latent_dims")
n = c[2].select_slider("Test images", [500, 1000, 2000, 5000, 10_000], value=1000, key="latent_n")

folder = loaders.data_folder(entry.dataset)
if folder is None:
    widgets.no_dataset(entry.dataset)
    st.stop()

ckpt = widgets.load_or_stop(entry)
z, labels = loaders.test_latents(entry.path, entry.dataset, folder, n)
pca = geometry.fit_pca(z, dims)
centroids = pca.project(ckpt.model.centroids.cpu().numpy()) if entry.has_centroids else None
titles = [f"PC{i + 1} ({v:.0%} of the variance)" for i, v in enumerate(pca.explained)]
st.plotly_chart(figures.latent_scatter(pca.project(z), labels, ckpt.class_names, centroids, titles),
                key="latent_fig")
st.caption(f"{len(z)} test images of {entry.dataset}, {entry.long_label}; the first {dims} components explain "
           f"{pca.explained.sum():.0%} of the latent variance (d = {z.shape[1]}).")
