"""Reconstructions (Fig. 4/5): test images and their reconstructions for each β, epoch and the CVAE.

Only the chosen dataset's models are loaded; the β slider picks a checkpoint path and
loaders.comparison_png (cached per checkpoint version and image selection) does the rest.
Everything below the title is one st.fragment: a β move reruns it alone, not the whole app script.
"""
import numpy as np
import pandas as pd
import streamlit as st

from app import defaults, loaders, registry, widgets

st.title("Reconstructions")
st.caption("Each pair of rows: test images, then their reconstructions. More noise β in training blurs the "
           "reconstructions a little but makes the decoder robust (compare the Class sampling page).")

entries = loaders.model_entries()
finals = registry.finals(entries, decoder_only=True)  # read from the manifest: nothing loaded yet
SWEPT = registry.DEFAULT_KIND  # the kind whose β the slider sweeps (Fig. 4/5: the CSAE)
csae_datasets = registry.datasets([e for e in finals if e.kind == SWEPT])
widgets.note_folder_models(csae_datasets, "Reconstructions")
csae_datasets = [d for d in csae_datasets if d in registry.DATASETS]  # the others have no test set to show
if not csae_datasets:
    widgets.no_models("the reconstruction view")
    st.stop()


def choose_model():
    """Dataset, β and epoch pickers: (dataset, that dataset's loadable decoders, the chosen entry)."""
    top = st.columns([1, 2, 1])
    dataset = widgets.choose_dataset(csae_datasets, key="recon_dataset", where=top[0])
    decoders = widgets.loadable([e for e in finals if e.dataset == dataset])  # this dataset's models only
    if not any(e.kind == SWEPT for e in decoders):
        widgets.no_models("the reconstruction view", dataset)
        st.stop()
    betas = sorted({e.beta for e in decoders if e.dataset == dataset and e.kind == SWEPT})
    beta = top[1].select_slider("β (noise added to the latent code in training)", options=betas,
                                value=defaults.beta(betas), format_func=lambda b: f"{b:g}",
                                key=f"recon_beta_{dataset}")  # per dataset: their β lists may differ
    epochs = registry.snapshots(entries, dataset, SWEPT, beta)
    if len(epochs) > 1:
        last = epochs[max(epochs)]
        scale = "paper's 120-epoch scale" if last.paper_epoch else f"of {last.epochs}, {last.recipe} recipe"
        epoch = top[2].radio(f"Epoch ({scale})", list(epochs), index=len(epochs) - 1, horizontal=True,
                             key=f"recon_epoch_{beta:g}",
                             help="the snapshots of Fig. 4 (the paper: 40/80/120), where saved")
    else:
        epoch = next(iter(epochs))
        top[2].caption(f"{epochs[epoch].epoch_label.capitalize()} (no snapshots saved for this β)")
    return dataset, decoders, epochs[epoch]


@st.fragment
def view():
    """The page below its title. A fragment (issue 19): moving β, the epoch or the image pickers reruns this
    function only, not the app's navigation and page top, so a move costs the server a few lookups."""
    dataset, decoders, entry = choose_model()
    folder = loaders.data_folder(dataset)
    if folder is None:
        widgets.no_dataset(dataset)
        st.stop()

    names = widgets.load_or_stop(entry).class_names
    pick = st.columns([1, 1, 1, 1])
    how = pick[0].radio("Images", ["random", "one class"], horizontal=True, key="recon_how")
    class_index = None
    if how == "one class":
        present = sorted(set(loaders.split_labels(dataset, folder).tolist()))
        class_index = widgets.choose_class(names, "recon_class", where=pick[1], classes=present)
    seed = widgets.seed_input("recon_seed", where=pick[2])
    count = pick[3].select_slider("How many", [8, 16, 24, 32], value=defaults.RECON_IMAGES, key="recon_count")
    indices, _, labels = loaders.test_selection(dataset, folder, class_index, count, seed)
    key = tuple(int(i) for i in indices)
    nrow = defaults.RECON_ROW

    widgets.image_row(loaders.comparison_png(entry.path, dataset, folder, key, nrow),
                      f"{entry.long_label}: test images (odd rows) and reconstructions (even rows)")
    rec = loaders.reconstruction(entry.path, dataset, folder, key)
    m1, m2, m3 = st.columns(3)
    m1.metric("Mean MSE", f"{rec.mse.mean():.5f}")
    m2.metric("Mean PSNR", f"{rec.psnr.mean():.2f} dB")
    if entry.test_accuracy is not None:
        m3.metric("Test accuracy", f"{entry.test_accuracy:.2%}", help="as recorded in the manifest or the checkpoint")
    with st.expander("MSE and PSNR per image"):
        st.dataframe(pd.DataFrame({"position": np.arange(1, len(indices) + 1), "test index": indices,
                                   "class": [names[int(c)] for c in labels], "MSE": rec.mse,
                                   "PSNR (dB)": rec.psnr}), hide_index=True)
    side_by_side(decoders, dataset, folder, key)

    # Warm the cache for the other β values after the page is drawn, so the next slider move is a lookup.
    loaders.prefetch_grids([e.path for e in decoders if e.kind == SWEPT and e.path != entry.path],
                           dataset, folder, key, nrow)


def side_by_side(decoders, dataset, folder, key):
    same_epoch = decoders  # finals of this dataset: every β and the CVAE
    if st.toggle("Side by side: every β and the CVAE on the first 16 of these images", key="recon_strip"):
        strip = key[:16]
        widgets.image_row(loaders.row_png(None, dataset, folder, strip), "test images")
        for e in same_epoch:
            r = loaders.reconstruction(e.path, dataset, folder, strip)
            widgets.image_row(loaders.row_png(e.path, dataset, folder, strip),
                              f"{e.label} ({e.epoch_label}) · mean MSE {np.mean(r.mse):.5f}")


view()
