"""Open set: can a model tell an image of none of its classes (letters, other datasets) from its own?"""
import streamlit as st

from app import loaders, registry, widgets
from app import openset as app_openset

st.title("Open set: known or unknown?")
st.caption("Every model also says how unusual an input is: a CSAE by the distance of its code to the nearest "
           "PEDCC centroid (and by its reconstruction error), Basenet by its softmax confidence or energy, the "
           "CVAE by its best label's ELBO. Higher scores mean 'more likely unknown'. The threshold starts where it "
           "keeps 95 % of the known threshold images (every other test image; the final models trained on all the "
           "training images); the histogram and rates below are on the other half of the test set.")

entries = registry.finals(loaders.model_entries())
datasets = [d for d in registry.datasets(entries) if d in registry.DATASETS]
if not datasets:
    widgets.no_models("the open-set view")
    st.stop()
top = st.columns([1, 1, 2])
dataset = widgets.choose_dataset(datasets, key="openset_dataset", where=top[0])
known_folder = loaders.data_folder(dataset)
if known_folder is None:
    widgets.no_dataset(dataset, "This view")
    st.stop()
choices = app_openset.unknown_choices(dataset)
if not choices:
    st.info("No other dataset is present to serve as unknown images (EMNIST letters, MNIST or Fashion-MNIST).")
    st.stop()
unknown = top[1].selectbox("Unknown images", choices, format_func=app_openset.title, key="openset_unknown")
unknown_folder = app_openset.unknown_folder(unknown)
models = {e.path: e for e in widgets.loadable([e for e in entries if e.dataset == dataset])}
if not models:
    st.stop()
start = [e.path for e in app_openset.default_models(list(models.values()))]
chosen = top[2].multiselect("Models", list(models), default=start, format_func=lambda p: models[p].label,
                            key=f"openset_models_{dataset}")
if not chosen:
    st.info("Choose at least one model.")
    st.stop()

results = {p: app_openset.scores(p, dataset, known_folder, unknown, unknown_folder, app_openset.images_for(p))
           for p in chosen}

# ---------------------------------------------------------------- histogram at a threshold
st.header("Scores of known and unknown images")


@st.fragment
def scores_view():
    """Histogram at a threshold and ROC curves. A fragment (issue 19): moving the threshold (or picking
    another model or score for the histogram) reruns this function only, not the page's scoring lookups."""
    row = st.columns([1, 1, 2])
    path = row[0].selectbox("Model", chosen, format_func=lambda p: models[p].label, key="openset_hist_model")
    score = row[1].selectbox("Score", list(results[path]), key=f"openset_score_{path}",
                             help=app_openset.score_help())
    s = results[path][score]
    t95 = app_openset.threshold95(s)
    lo, hi = app_openset.slider_range(s)
    lo, hi = min(lo, t95), max(hi, t95)
    threshold = row[2].slider("Threshold: accept as known at or below", lo, hi, t95, step=(hi - lo) / 400,
                              format="%.4g", key=f"openset_threshold_{path}_{score}_{unknown}")
    r = app_openset.rates(s, threshold)
    st.plotly_chart(app_openset.histogram_figure(s["test"], s["unknown"], threshold, t95, xtitle=score,
                                                 unknown_name=app_openset.title(unknown)), key="openset_hist")
    st.markdown(f"At this threshold **{r['known_accepted']:.1%}** of known test images are accepted (TPR) and "
                f"**{r['unknown_accepted']:.1%}** of {app_openset.title(unknown)} are wrongly accepted as known (FPR).")

    # ---------------------------------------------------------------- ROC
    st.header("ROC curves")
    curves = app_openset.roc_curves(results, {p: models[p].label for p in chosen}, (path, score))
    st.plotly_chart(app_openset.roc_figure(curves), key="openset_roc")
    n_known = {len(results[p][next(iter(results[p]))]["test"]) for p in chosen}
    st.caption(f"Each model's default score (and the one above). Live on evenly spaced subsets "
               f"({', '.join(str(n) for n in sorted(n_known))} images per split); the full sets are in the table below.")


scores_view()

# ---------------------------------------------------------------- table
st.header("Table")
st.dataframe(app_openset.metrics_rows({models[p].label: results[p] for p in chosen}), hide_index=True)
zoo = app_openset.zoo_rows(dataset, unknown)
if zoo:
    st.subheader("Every shipped model, full test sets")
    st.dataframe(zoo, hide_index=True)
    st.caption("From results/openset.csv (`python results/make_openset.py`), which also has the β trend.")
