"""CSAE Explorer, the entrypoint: `python -m app` (app/__main__.py) or `streamlit run app/explorer.py` from the
repository root.

A router and frame only: page config, then st.navigation over the scripts in ../pages/. Because
the pages are registered with st.navigation, Streamlit does not auto-discover any pages/ folder
(and it would only look next to this file, in app/pages/, which does not exist).
"""
import logging
from pathlib import Path

import streamlit as st

from app import loaders, warmup  # importable because requirements.txt installs the project (`-e .`)

ROOT = Path(__file__).resolve().parents[1]


def page_error_message(e: Exception) -> str:
    """What a visitor is told when a page fails: a CSAEError's own message (written for users), else a
    plain note without the exception's text (it may hold server paths)."""
    from csae_core.errors import CSAEError

    if isinstance(e, CSAEError):
        return f"This page cannot be shown: {e}"
    return ("This page hit an unexpected problem and stopped. Try another model or dataset, or reload the page; "
            "the details were written to the server's log.")

PAGES = ROOT / "pages"

st.set_page_config(page_title="CSAE Explorer", page_icon=":material/hub:", layout="wide")
loaders.configure_torch()

navigation = st.navigation([
    st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
    st.Page(PAGES / "pedcc_sphere.py", title="PEDCC sphere", icon=":material/public:"),
    st.Page(PAGES / "distance_matrix.py", title="Distance matrix", icon=":material/grid_on:"),
    st.Page(PAGES / "reconstructions.py", title="Reconstructions", icon=":material/compare:"),
    st.Page(PAGES / "class_sampling.py", title="Class sampling", icon=":material/casino:"),
    st.Page(PAGES / "letters.py", title="Letters (EMNIST)", icon=":material/text_fields:"),
    st.Page(PAGES / "open_set.py", title="Open set", icon=":material/help_center:"),
    st.Page(PAGES / "latent_space.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page(PAGES / "train.py", title="Train your own", icon=":material/model_training:"),
])
try:
    navigation.run()
except Exception as e:  # the one boundary: st.stop/st.rerun are BaseExceptions and pass through
    # A visitor never sees a traceback or a server path (also client.showErrorDetails = "none" in
    # .streamlit/config.toml); the detail goes to the server's log.
    logging.getLogger("csae_explorer").exception("page %r failed", navigation.title)
    st.error(page_error_message(e))
finally:
    # Once per server process, after the first page is drawn (started before it, the warm-up's model loads
    # and image parsing took turns with that page on the GIL): load the default model and precompute each
    # view's first draw in the background (app/warmup.py). A no-op once started.
    warmup.start()
