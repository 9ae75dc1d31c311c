"""Letters (Fig. 11): models trained on digits reconstruct EMNIST, uploaded and drawn letters they never saw."""
import numpy as np
import streamlit as st

from app import grids, letters, loaders, registry, widgets
from app import openset as app_openset
from csae_core import data, geometry

st.title("Letters: extrapolation")
st.caption("The models were trained on digits only. Letters test how far the decoder generalises (section 4.4): "
           "a robust decoder still draws a letter-like shape. The distance to the nearest digit centroid, next to "
           "that of real digits, shows how far outside the known classes a letter's code lands.")

decoders = registry.finals(loaders.model_entries(), decoder_only=True)
model_datasets = registry.datasets(decoders)
widgets.note_folder_models(model_datasets, "Letters")
model_datasets = [d for d in model_datasets if d in data.DATASETS]  # grey 28x28 letters fit these models only
if not model_datasets:
    widgets.no_models("the letters view")
    st.stop()
dataset = widgets.choose_dataset(model_datasets, key="letters_dataset")
models = widgets.loadable([e for e in decoders if e.dataset == dataset])
if not models:
    st.stop()
with_centroids = [e for e in models if e.has_centroids]
names = loaders.load_model(models[0].path).class_names
st.subheader("Verdicts: unknown, or which digit?")
verdict = app_openset.verdict_controls(models, dataset)  # (judging model, distance threshold) or None


def scale_note(entry) -> str:
    """What a 'near' distance is: digits to their own centroid (median), and centroid to centroid."""
    centroids = loaders.load_model(entry.path).model.centroids.cpu().numpy()
    apart = geometry.pairwise_distances(centroids)[np.triu_indices(len(centroids), 1)].min()
    note = f"Neighbouring centroids are {apart:.2f} apart"
    folder = loaders.data_folder(entry.dataset)
    if folder is not None:
        z, labels = loaders.test_latents(entry.path, entry.dataset, folder, 1000)
        own = np.median(geometry.own_centroid_distances(z, labels, centroids))
        title = data.DATASETS[entry.dataset].title
        note += f"; {title} test images lie at a median {own:.2f} from their own class's centroid"
    return note + f" ({entry.label})."


def show_results(titles, images28, row_png, nearest) -> None:
    """Input row, one reconstruction row per model, and the nearest-class table."""
    nrow = min(len(images28), loaders.LETTERS_PER_ROW)
    widgets.image_row(grids.png(grids.grid(np.stack(images28), nrow=nrow)), "input (28×28, padded to 32)")
    for e in models:
        widgets.image_row(row_png(e.path), e.label)
    if with_centroids:
        rows = letters.nearest_table(titles, {e.label: nearest(e.path) for e in with_centroids}, names)
        if verdict:
            for row, v in zip(rows, app_openset.verdicts(*nearest(verdict[0].path), verdict[1], names)):
                row["verdict"] = v  # by the judging model at the threshold above
        st.dataframe(rows, hide_index=True)
        st.caption("Nearest class and the distance to its PEDCC centroid, for each CSAE. "
                   + scale_note(with_centroids[0]))


def show_letter_rows(titles, images28, recon, nearest) -> None:
    """One row per letter: its input and every model's reconstruction side by side, and beside them that
    letter's nearest class for each CSAE (so models compare without scrolling)."""
    recons = {e.path: recon(e.path) for e in models}
    near = {e.label: nearest(e.path) for e in with_centroids}
    judged = app_openset.verdicts(*nearest(verdict[0].path), verdict[1], names) if verdict else None
    for i, title in enumerate(titles):
        tiles, table = st.columns([len(models) + 1, 4 if near else 1], vertical_alignment="center")
        cells = tiles.columns(len(models) + 1)
        widgets.image_row(grids.png(grids.grid(images28[i][None], nrow=1)), f"{title} (input)", where=cells[0])
        for cell, e in zip(cells[1:], models):
            widgets.image_row(grids.png(grids.grid(recons[e.path][i][None], nrow=1)), e.label, where=cell)
        if judged:
            table.markdown(f"Verdict ({verdict[0].label}): **{judged[i]}**")
        if near:
            table.dataframe([{"model": label, "nearest class": names[int(classes[i])], "distance": float(dist[i])}
                             for label, (classes, dist) in near.items()], hide_index=True,
                            column_config={"distance": st.column_config.NumberColumn(format="%.2f")})
    if near:
        st.caption("Nearest class and the distance to its PEDCC centroid, for each CSAE. "
                   + scale_note(with_centroids[0]))


# ---------------------------------------------------------------- EMNIST
st.header("EMNIST letters")
em_folder = loaders.data_folder("emnist-letters")
if em_folder is None:
    widgets.no_dataset("emnist-letters", "This section")
    st.caption("Uploaded and drawn letters below work without it.")
else:
    letter_names = data.DATASETS["emnist-letters"].class_names
    c = st.columns(3)
    source = c[0].radio("Letters", ["one of every letter (a–z)", "several of one letter"], key="em_source")
    if source.startswith("one"):
        split = "one-per-class"
        idx, _, labs = loaders.test_selection("emnist-letters", em_folder, None, 26, 0, split=split)
        idx = idx[np.argsort(labs)]
    else:
        split = "test"
        present = sorted(set(loaders.split_labels("emnist-letters", em_folder, split).tolist()))
        k = c[1].selectbox("Letter", present, format_func=lambda i: letter_names[i], key="em_letter",
                           help="The shared copy of the test split holds classes a–m only.")
        count = c[2].slider("How many", 4, 20, 10, key="em_count")
        idx, _, _ = loaders.test_selection("emnist-letters", em_folder, k, count, 0, split=split)
    key = tuple(int(i) for i in idx)
    images, labels = loaders.emnist_letters("emnist-letters", em_folder, split, key)
    show_results([letter_names[int(k)] for k in labels], list(images),
                 lambda p: loaders.emnist_letters_png(p, "emnist-letters", em_folder, split, key),
                 lambda p: loaders.emnist_letters_nearest(p, "emnist-letters", em_folder, split, key))

# ---------------------------------------------------------------- user letters
st.header("Your letters")
st.caption("Upload PNG/JPEG images of handwritten letters (several at once) or draw one. They are processed in "
           "memory only, like EMNIST: grey, blurred, cropped to the ink, centred in a square, 2 px border, 28×28.")
up_col, draw_col = st.columns([3, 2])
uploads = up_col.file_uploader("Images", type=["png", "jpg", "jpeg"], accept_multiple_files=True,
                               key="letter_files")
# Per-user: the preprocessed uploads (thumbnails and 28x28 inputs, never the full images) live in this
# session only, keyed by the uploader's file id, at most letters.MAX_LETTERS of them.
seen = st.session_state.setdefault("letter_inputs", {})
uploads = list(uploads or [])
if len(uploads) > letters.MAX_LETTERS:
    st.warning(f"{len(uploads)} files uploaded: the first {letters.MAX_LETTERS} are used. "
               f"Remove some to see the others.")
    uploads = uploads[:letters.MAX_LETTERS]
inputs = []
for f in uploads:
    if f.file_id not in seen:
        seen[f.file_id] = letters.prepare_image(f.name, f.getvalue())
    inputs.append(seen[f.file_id])
for stale in set(seen) - {f.file_id for f in uploads}:
    del seen[stale]

with draw_col:
    try:
        from streamlit_drawable_canvas import st_canvas

        drawn = st_canvas(stroke_width=16, stroke_color="#000000", background_color="#ffffff", height=200,
                          width=200, drawing_mode="freedraw", return_image_data=True, key="letter_canvas")
        drawing = letters.prepare_canvas(drawn)  # size-checked before any decoding: the value is the browser's
        if drawing is None:
            st.caption("Draw a letter above (it is read when you release the mouse).")
        else:
            inputs.append(drawing)
    except Exception as e:  # a broken optional component must not take the page down
        st.info(f"The drawing canvas is unavailable here ({type(e).__name__}); uploads still work.")

for item in inputs:
    if not item.ok:
        st.error(item.error)
good = [item for item in inputs if item.ok]
for item in good:
    with st.expander(f"Preprocessing of {item.name}", expanded=len(good) == 1):
        cols = st.columns(len(item.steps))
        for col, (title, arr) in zip(cols, item.steps):
            widgets.image_row(grids.small_png(arr), title, where=col)
if good:
    pictures = np.stack([item.model_input for item in good])
    show_letter_rows([item.name for item in good], pictures,
                     lambda p: loaders.letters_recon(p, pictures),
                     lambda p: loaders.letters_nearest(p, pictures))
