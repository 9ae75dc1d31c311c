"""Home: what CSAE and PEDCC are, which models and datasets were found, and how to get the missing ones."""
import streamlit as st

from app import defaults, loaders, registry, widgets
from app.widgets import shown_path, shown_text

st.title("CSAE Explorer")

text, picture = st.columns([3, 2])
with text:
    st.markdown(
        "**CSAE** (Zhu & Zhang, *A Classification Supervised Auto-Encoder Based on Predefined "
        "Evenly-Distributed Class Centroids*) is an autoencoder whose latent code is also its classifier. "
        "Before training, **PEDCC** places one centre per class on a hypersphere in the latent space "
        "(d = 40 here) as far apart as possible, by letting like charges repel each other until they "
        "settle (Algorithm 1). The encoder is trained to map every image onto its class's centre "
        "(a mean-squared-error loss), the decoder to rebuild the image from that code (MSE plus a "
        "wavelet loss for sharp edges), and Gaussian noise of strength **β** is added to the code during "
        "training so that the decoder tolerates codes between the samples it has seen.\n\n"
        "A test image is classified by the nearest predefined centre; new images of a class are made by "
        "sampling its latent Gaussian and decoding. The pages on the left show each part: the centres on "
        "a sphere, their distances, reconstructions for each β, class sampling, letters the models never "
        "saw, and the latent space.")

st.header("Models found")
entries = loaders.model_entries()
folder = registry.checkpoints_dir()
if entries:
    st.dataframe(
        [{"dataset": e.dataset, "model": e.label, "epoch (paper scale)": e.paper_epoch, "epoch": e.epoch,
          "recipe": e.recipe, "seed": e.seed, "test accuracy": e.test_accuracy, "recon MSE": e.recon_mse,
          "checkpoint": shown_path(e.path, folder)} for e in entries],
        hide_index=True)
    st.caption(f"Read from `{shown_path(folder)}` (manifest.json, plus any "
               f"checkpoint it does not list); checkpoint paths are relative to it.")
else:
    widgets.no_models("every view except the PEDCC sphere")

st.header("Datasets")
rows = loaders.dataset_rows()
st.dataframe(
    [{"dataset": r["dataset"], "split": r["split"], "ok": r["ok"], "images": r["images"],
      "classes present": " ".join(r["classes"]) if len(r["classes"]) <= 26 else f"{len(r['classes'])}",
      "checked": "whole file" if r.get("checked") != "header" else "header and labels",
      "path or problem": shown_path(r["path"]) if r["ok"] else shown_text(r["problem"])} for r in rows],
    hide_index=True)
st.caption("The app reads the test splits only; `python -m csae_core data check` parses every file whole.")
if "downloaded" in st.session_state:
    st.success(f"{st.session_state.pop('downloaded')} is ready.")
missing = [n for n in registry.DATASETS if loaders.data_folder(n) is None]
if missing:
    source, target = widgets.download_source()
    # Downloads only behind an explicit confirmation: a visitor's click starts a fetch on this server.
    with st.expander(f"Download the missing datasets ({', '.join(registry.DATASETS[n].title for n in missing)})"):
        st.write(f"Files are fetched from {source} into `{target}/`. "
                 f"`python -m csae_core data download NAME` does the same from a terminal.")
        for name in missing:
            title, size = registry.DATASETS[name].title, registry.DATASETS[name].download_size or "size unknown"
            if st.checkbox(f"Yes, download {title} ({size}) on this server",
                           key=f"confirm_download_{name}"):
                if widgets.download_dataset_button(name, key=f"download_{name}"):
                    st.session_state["downloaded"] = title
                    st.rerun()  # the dataset table is keyed by the dataset folders, so it refreshes itself
else:
    st.caption("All datasets were found. The shared EMNIST copy holds classes a–m of the test split plus one "
               "image of every letter; the paper used 10 letter classes.")

with picture:
    # Drawn last, though shown at the top: a browser first loads plotly's script (a few MB) to draw it, and
    # elements sent after a plotly chart waited for that; now the text and tables appear first.
    # The picture: 10 PEDCC centres on the 3-D sphere (the same algorithm, with d = 3 so it can be seen).
    # The PEDCC view's default run (app/defaults.py), so the warm-up's pedcc_run serves both.
    st.plotly_chart(loaders.sphere_figure(defaults.PEDCC_POINTS, defaults.SEED, None, defaults.PEDCC_CONVERGE, 320),
                    key="home_sphere")
    st.caption(f"PEDCC with {defaults.PEDCC_POINTS} classes on the 3-D sphere (the models use "
               f"{defaults.MODEL_CLASSES} centres in {defaults.MODEL_LATENT_DIM} dimensions).")
