"""Latent space: test-set latent codes in 2-D/3-D (PCA) or 2-D (t-SNE), coloured by class, with the PEDCC
centroids; and how the codes classify (nearest centroid) as a confusion matrix."""
import streamlit as st

from app import analysis, defaults, figures, loaders, widgets

PROJECTIONS = {"PCA 2-D": 2, "PCA 3-D": 3, "t-SNE 2-D": "tsne"}
TSNE_MAX = 2000  # t-SNE takes a few seconds per thousand codes on a busy core; PCA takes any number

st.title("Latent space")
st.caption("Each dot is the latent code of one test image. A CSAE pulls each class onto its predefined centroid "
           "(black diamonds). PCA is a linear projection (the centroids are projected with it); t-SNE keeps "
           "neighbourhoods instead of distances (the centroids are embedded along with the codes).")


@st.fragment
def view():
    """The page below its title. A fragment (issue 19): a move of the model, projection or image-count picker
    reruns this function only, not the app's navigation and the page top."""
    entry, c = widgets.model_controls("the latent space view", key="latent_model", widths=[3, 1, 1])
    how = c[0].radio("Projection", list(PROJECTIONS), horizontal=True, key="latent_projection")
    sizes = [500, 1000, 2000] if PROJECTIONS[how] == "tsne" else [500, 1000, 2000, 5000, 10_000]
    n = c[1].select_slider("Test images", sizes, value=defaults.LATENT_IMAGES, key=f"latent_n_{how}")

    folder = loaders.data_folder(entry.dataset)
    if folder is None:
        widgets.no_dataset(entry.dataset)
        st.stop()

    ckpt = widgets.load_or_stop(entry)
    z, labels = loaders.test_latents(entry.path, entry.dataset, folder, n)
    centroids = analysis.centroids(ckpt.model)
    if PROJECTIONS[how] == "tsne":
        proj, proj_centroids = loaders.test_latents_tsne(entry.path, entry.dataset, folder, n)
        titles = ["t-SNE 1", "t-SNE 2"]
        note = "t-SNE distances between clusters carry no meaning; neighbourhoods do"
    else:
        pca = analysis.fit_pca(z, PROJECTIONS[how])
        proj, proj_centroids = pca.project(z), None if centroids is None else pca.project(centroids)
        titles = [f"PC{i + 1} ({v:.0%} of the variance)" for i, v in enumerate(pca.explained)]
        note = f"the first {len(pca.explained)} components explain {pca.explained.sum():.0%} of the latent variance"
    st.plotly_chart(figures.latent_scatter(proj, labels, ckpt.class_names, proj_centroids, titles), key="latent_fig")
    st.caption(f"{len(z)} test images of {entry.dataset}, {entry.long_label}; {note} (d = {z.shape[1]}).")

    if centroids is not None:
        with st.expander("How these codes classify: confusion matrix of the nearest centroid"):
            table, accuracy = analysis.nearest_centroid_confusion(z, labels, centroids, ckpt.class_names)
            st.dataframe(table)
            st.caption(f"Rows: true class, columns: nearest PEDCC centroid; {accuracy:.2%} of these "
                       f"{len(z)} test images on the diagonal.")


view()
