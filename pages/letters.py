"""Letters (Fig. 11): models trained on digits reconstruct EMNIST, uploaded and drawn letters they never saw."""
import numpy as np
import streamlit as st

from app import defaults, grids, letters, loaders, registry, widgets
from app import openset as app_openset
from app.letter_views import LetterModels, show_letter_rows, show_results, uploaded_letters

st.title("Letters: extrapolation")
st.caption("The models were trained on digits only. Letters test how far the decoder generalises (section 4.4): "
           "a robust decoder still draws a letter-like shape. The distance to the nearest digit centroid, next to "
           "that of real digits, shows how far outside the known classes a letter's code lands.")

decoders = registry.finals(loaders.model_entries(), decoder_only=True)
model_datasets = registry.datasets(decoders)
widgets.note_folder_models(model_datasets, "Letters")
model_datasets = [d for d in model_datasets if d in registry.DATASETS]  # grey 28x28 letters fit these models only
if not model_datasets:
    widgets.no_models("the letters view")
    st.stop()
dataset = widgets.choose_dataset(model_datasets, key="letters_dataset")
models = widgets.loadable([e for e in decoders if e.dataset == dataset])
if not models:
    st.stop()
names = loaders.load_model(models[0].path).class_names
st.subheader("Verdicts: unknown, or which digit?")
shown = LetterModels(models, names, app_openset.verdict_controls(models, dataset))


# ---------------------------------------------------------------- EMNIST
st.header("EMNIST letters")
em_folder = loaders.data_folder("emnist-letters")
if em_folder is None:
    widgets.no_dataset("emnist-letters", "This section")
    st.caption("Uploaded and drawn letters below work without it.")
else:
    letter_names = registry.DATASETS["emnist-letters"].class_names
    c = st.columns(3)
    source = c[0].radio("Letters", ["one of every letter (a–z)", "several of one letter"], key="em_source")
    if source.startswith("one"):
        split = defaults.LETTERS_SPLIT
        idx = loaders.one_letter_per_class("emnist-letters", em_folder)
    else:
        split = "test"
        present = sorted(set(loaders.split_labels("emnist-letters", em_folder, split).tolist()))
        k = widgets.choose_class(letter_names, "em_letter", where=c[1], classes=present, label="Letter",
                                 help="The shared copy of the test split holds classes a–m only.")
        count = c[2].slider("How many", 4, 20, 10, key="em_count")
        idx, _, _ = loaders.test_selection("emnist-letters", em_folder, k, count, 0, split=split)
    key = tuple(int(i) for i in idx)
    images, labels = loaders.emnist_letters("emnist-letters", em_folder, split, key)
    show_results(shown, [letter_names[int(k)] for k in labels], images,
                 lambda p: loaders.emnist_letters_png(p, "emnist-letters", em_folder, split, key),
                 lambda p: loaders.emnist_letters_nearest(p, "emnist-letters", em_folder, split, key))

# ---------------------------------------------------------------- user letters
st.header("Your letters")
st.caption("Upload PNG/JPEG images of handwritten letters (several at once) or draw one. They are processed in "
           "memory only, like EMNIST: grey, blurred, cropped to the ink, centred in a square, 2 px border, 28×28.")
up_col, draw_col = st.columns([3, 2])
uploads = up_col.file_uploader("Images", type=["png", "jpg", "jpeg"], accept_multiple_files=True,
                               key="letter_files")
inputs = uploaded_letters(uploads)

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
    show_letter_rows(shown, [item.name for item in good], pictures,
                     lambda p: loaders.letters_recon(p, pictures),
                     lambda p: loaders.letters_nearest(p, pictures))
