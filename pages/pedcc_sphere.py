"""PEDCC sphere: n centroids on the 3-D sphere, their convergence, and the d = 40 centroids of the models."""
import numpy as np
import streamlit as st

from app import analysis, defaults, figures, loaders, registry, widgets
from app.analysis import pedcc_metrics

st.title("PEDCC on the sphere")
st.caption("Algorithm 1: n unit charges repel each other (force ∝ 1/distance²) along the sphere until they "
           "settle. With d = 3 the result can be seen and compared with the best known Thomson-problem energies.")

left, right = st.columns([1, 3])
with left:
    n = st.slider("Points n", 2, 60, defaults.PEDCC_POINTS, key="pedcc_n")
    seed = st.number_input("Seed", 0, 10_000, defaults.SEED, step=1, key="pedcc_seed")
    mode = st.radio("Run", ["until converged", "fixed iterations (the paper)"], key="pedcc_mode",
                    index=0 if defaults.PEDCC_CONVERGE else 1,
                    help="The paper runs a fixed number of iterations; 'until converged' adds a damped descent "
                         "that stops when the energy no longer improves.")
    converge = mode == "until converged"
    iters = None if converge else st.number_input("Iterations q", 1, 20_000, 1000, step=100, key="pedcc_iters")

result = loaders.pedcc_run(n, 3, int(seed), None if iters is None else int(iters), converge)
metrics = pedcc_metrics(result.centroids)
history = result.history.numpy()
frame_metrics = [pedcc_metrics(u) for u in history]

with left:
    st.metric("Smallest angle between two points", f"{metrics['min_angle_deg']:.2f}°")
    st.metric("Coulomb energy Σ 1/|uᵢ−uⱼ|", f"{metrics['energy']:.6f}")
    if metrics["known_min_energy"] is not None:
        st.metric("Gap to the best known minimum", f"{metrics['energy_gap']:.2e}",
                  help=f"best known energy for n = {n}: {metrics['known_min_energy']:.9f}")
    st.caption(f"{result.iterations} iterations in {result.seconds * 1000:.0f} ms"
               + (", converged" if result.converged else ""))
with right:
    st.plotly_chart(loaders.sphere_figure(n, int(seed), None if iters is None else int(iters), converge,
                                          animated=True), key="pedcc_sphere_fig")
    st.caption("Drag to rotate; ▶ plays the convergence from the random start, the slider scrubs it "
               f"({len(history)} recorded frames).")
    st.plotly_chart(figures.line_figure(list(range(1, len(history) + 1)), [m["energy"] for m in frame_metrics],
                                        "recorded frame", "energy", hline=metrics["known_min_energy"],
                                        hline_label="best known"), key="pedcc_energy_fig")

st.header("The d = 40 centroids of the models")
st.caption("With 10 classes in 40 dimensions the optimum is the regular simplex: every pair of centroids has "
           "cosine −1/9, so the histogram should be a single spike there.")
with_centroids = [e for e in registry.finals(loaders.model_entries()) if e.has_centroids]
if with_centroids:
    entry = widgets.choose_model(with_centroids, key="pedcc_model", label="Centroids of")
    ckpt = widgets.load_or_stop(entry)
    centroids = analysis.centroids(ckpt.model)
    source = f"the centroids {entry.long_label} classifies with"
    if ckpt.meta.get("weights_dtype") == "float16":
        source += " (its weights are stored in fp16; the centroids are kept in fp32, as trained)"
else:
    k, d = defaults.MODEL_CLASSES, defaults.MODEL_LATENT_DIM
    st.info(f"No CSAE checkpoint was found, so these are freshly generated ({k} classes, d = {d}, seed "
            f"{defaults.SEED}), like the ones the models are trained with.")
    centroids = loaders.pedcc_run(k, d, defaults.SEED, None, True).centroids.numpy()
    source = f"generate_pedcc({k}, {d}, converge=True)"
m40 = pedcc_metrics(np.asarray(centroids))
c1, c2, c3 = st.columns(3)
c1.metric("Largest cosine", f"{m40['max_cosine']:.6f}")
c2.metric("Smallest angle", f"{m40['min_angle_deg']:.3f}°")
if m40["simplex_gap"] is not None:
    c3.metric("Gap to the simplex cosine", f"{m40['simplex_gap']:.2e}")
st.plotly_chart(figures.cosine_histogram(analysis.pairwise_cosines(centroids), m40["simplex_max_cosine"]),
                key="pedcc_cosines_fig")
st.caption(f"Pairwise cosines of {source}.")
