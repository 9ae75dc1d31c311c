"""Distance matrix (Fig. 10): distances between the PEDCC centroids and between the learned class means."""
import numpy as np
import streamlit as st

from app import analysis, figures, loaders, widgets

st.title("Distance matrix")
st.caption("Fig. 10 of the paper: the Euclidean distances between the class centres of the latent codes. "
           "Because the centres are predefined and evenly spread, all off-diagonal distances are nearly equal — "
           "even for classes that look alike (4/9, 7/9 in MNIST).")

entry, controls = widgets.model_controls("the distance matrix", key="dist_model", widths=[2, 2, 1])
ckpt = widgets.load_or_stop(entry)
names = ckpt.class_names
source = controls[0].radio("Class means from", ["training latents stored in the checkpoint", "test set"],
                           key="dist_source", horizontal=False)
upper = controls[1].toggle("Upper triangle only", value=True, key="dist_upper")

means = None
if source.startswith("training"):
    stats = ckpt.latent_stats()
    if stats is None:
        st.warning("This checkpoint stores no class latent statistics; showing test-set means instead.")
    else:
        means = stats[0].numpy()
if means is None:
    folder = loaders.data_folder(entry.dataset)
    if folder is None:
        widgets.no_dataset(entry.dataset, "Test-set class means")
    else:
        n = st.slider("Test images", 500, 10_000, 2000, step=500, key="dist_test_n")
        z, labels = loaders.test_latents(entry.path, entry.dataset, folder, n)
        means = analysis.class_means(z, labels, len(names))

left, right = st.columns(2)
if entry.has_centroids:
    pedcc = analysis.pairwise_distances(analysis.centroids(ckpt.model))
    left.subheader("PEDCC centroids (predefined)")
    left.plotly_chart(figures.distance_heatmap(pedcc, names, upper), key="dist_pedcc_fig")
    left.caption(f"All off-diagonal distances ≈ {pedcc[~np.eye(len(pedcc), dtype=bool)].mean():.3f} "
                 f"(centroids scaled by √d = {ckpt.config.alpha:.3f}).")
else:
    left.info(f"A {entry.label} has no predefined centroids; only its learned class means are shown.")
if means is not None:
    learned = analysis.pairwise_distances(means)
    right.subheader(f"Learned class means — {entry.label}")
    right.plotly_chart(figures.distance_heatmap(learned, names, upper), key="dist_learned_fig")
    off = learned[~np.eye(len(learned), dtype=bool)]
    right.caption(f"Off-diagonal distances: min {np.nanmin(off):.3f}, max {np.nanmax(off):.3f}, "
                  f"spread {np.nanmax(off) - np.nanmin(off):.3f}.")
