"""`python -m app [streamlit options]`: start the explorer, its heavy imports done before the server listens.

`streamlit run app/explorer.py` imports the explorer's modules (torch, csae_core, pandas, plotly) only when the
first browser connects, so the first visitor of a fresh server waits for them (about 1.5 s on 2 cores). Here
they are imported first, in the process that then runs `streamlit run app/explorer.py` with the options given
(`--server.port 8502`, `--server.address 0.0.0.0`, ...): the server says it is up only once they are loaded.
`streamlit run app/explorer.py` still works; its first page is just slower.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

EXPLORER = Path(__file__).resolve().with_name("explorer.py")


def preload() -> None:
    """Import what every page's first run needs. Streamlit's caches are created per call, so decorating them
    before its runtime exists is harmless; only its 'No runtime found' warnings are kept off the log."""
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import pandas  # noqa: F401  (st.dataframe converts through it)

        from app import figures, loaders, registry, widgets  # noqa: F401  (torch, csae_core, plotly)
    finally:
        quiet.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(EXPLORER), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
