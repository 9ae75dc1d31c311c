"""CSAE Explorer: the Streamlit UI around csae_core (`python -m app`, or `streamlit run app/explorer.py`).

Pages (../pages/) import only this package; this package imports csae_core; csae_core never imports
either. Modules, one job each:
  registry      which trained models exist (checkpoints/manifest.json, else the checkpoint JSONs); what
                a kind can do and how it is named come from csae_core.model.KINDS
  analysis      glue that calls csae_core on arrays (reconstructions, latents, nearest centroid, distances);
                uint8 pictures become model floats here, once
  loaders       the caches: st.cache_resource / st.cache_data keyed per checkpoint version (over the on-disk
                store of disk_store), the per-session memo of user letters, and whether a GPU is present
  disk_store    the on-disk store under loaders' (and openset's) memory caches: computed once per checkpoint
                sha256 + code version + data files, read back by later processes ($CSAE_CACHE_DIR)
  warmup        once per server process, in the background: the default views' first draws, through loaders
  openset       the Open set view's scores (cached like loaders', with st.cache_data keyed by checkpoint
                version: kept beside the view's thresholds and figures because nothing else uses them),
                figures and the letters' verdict controls
  passes        model passes one at a time per process, a page's own before prefetches and the warm-up's
  grids         image grids (csae_core.images.tile) and PNG bytes for st.image
  figures       plotly figure builders (return go.Figure, no st. calls)
  letters       user images (uploads, canvas) -> EMNIST-style 28x28 inputs or a message
  letter_views  the Letters page's rows and tables, as functions of the models shown
  widgets       shared Streamlit pieces: pickers, "what is missing" notes, image strips, shown paths
  training_plan, training_jobs, training_runner, uploads, train_ui
                the Train view: recipes and bounds; the job queue (separate processes, JSON job files); the
                process behind a job; uploaded zips of image folders; the view's widgets and live panel
Memory caches live in loaders and openset only (tests/test_layers.py checks it).
"""
