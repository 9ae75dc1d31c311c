"""CSAE Explorer: the Streamlit UI around csae_core (`streamlit run app/explorer.py`).

Modules, one job each:
  registry  which trained models exist (checkpoints/manifest.json, else the checkpoint JSONs)
  analysis  glue that calls csae_core on arrays (reconstructions, latents, nearest centroid)
  loaders   every cache: st.cache_resource / st.cache_data keyed per checkpoint version, and the
            per-session memo of user letters (the only module that caches)
  grids     image grids and PNG bytes for st.image
  figures   plotly figure builders (return go.Figure, no st. calls)
  letters   user images (uploads, canvas) -> EMNIST-style model inputs or a message
  widgets   shared Streamlit pieces: pickers, "what is missing" notes, image strips
  training_plan, training_jobs, training_runner, uploads, train_ui
            the Train view: recipes and bounds; the job queue (separate processes, JSON job files); the
            process behind a job; uploaded zips of image folders; the view's widgets and live panel
The pages themselves are in ../pages/.
"""
