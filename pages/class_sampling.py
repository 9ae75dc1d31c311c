"""Class sampling (Fig. 7/8): decode draws from each class's latent Gaussian, and paths between class centres."""
import streamlit as st

from app import loaders, widgets

st.title("Class sampling")
st.caption("CSAE: the latent codes of each class's training images have a mean and a covariance; drawing from "
           "that Gaussian and decoding gives new images of the class (section 4.2). The CVAE draws z ~ N(0, I) "
           "and decodes it with the class as condition.")

entry = widgets.choose_final_model("class sampling", key="sample_model", decoder_only=True)
ckpt = widgets.load_or_stop(entry)
names = ckpt.class_names
if not entry.label_conditioned and ckpt.latent_stats() is None:  # it samples from class Gaussians
    st.warning("This checkpoint stores no class latent statistics, so it cannot sample. Retrain it with "
               "`python -m csae_core train` (every checkpoint it writes has them).")
    st.stop()

c = st.columns(4)
mode = c[0].radio("Show", ["all classes (Fig. 7 grid)", "one class"], key="sample_mode")
seed = widgets.seed_input("sample_seed", where=c[1])
temperature = c[2].slider("Temperature (scales the covariance)", 0.0, 3.0, 1.0, 0.1, key="sample_temperature")
if mode == "one class":
    k = widgets.choose_class(names, "sample_class", where=c[3])
    n = c[3].slider("Samples", 1, 64, 32, key="sample_n")
    classes = (k,)
else:
    n = c[3].slider("Samples per class", 1, 16, 10, key="sample_per_class")
    classes = tuple(range(len(names)))
widgets.image_row(loaders.samples_png(entry.path, classes, n, float(temperature), seed),
                  f"{entry.long_label}: one row per class ({', '.join(names[k] for k in classes)}), "
                  f"temperature {temperature:g}, seed {seed}")

st.header("Between two classes")
if not entry.has_centroids:
    st.caption(f"The {entry.label} has no class centres to walk between; pick a CSAE model for this part.")
else:
    i = st.columns(4)
    a = widgets.choose_class(names, "interp_a", where=i[0], label="From")
    b = widgets.choose_class(names, "interp_b", where=i[1], label="To", index=min(1, len(names) - 1))
    steps = i[2].slider("Steps", 2, 16, 10, key="interp_steps")
    use_means = i[3].radio("Ends", ["PEDCC centroids", "learned class means"], key="interp_ends") != "PEDCC centroids"
    widgets.image_row(loaders.interpolation_png(entry.path, a, b, steps, use_means),
                      f"Decoded straight path from {names[a]} to {names[b]} ({steps} steps, both ends included)")
