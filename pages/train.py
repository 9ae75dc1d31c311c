"""Train your own model: choose the data, the model kind, β, the latent size and a recipe; watch it train.

The job is the library's own `python -m csae_core train`, run as a separate process (app/training_jobs.py):
it goes on when this page is left or the tab is closed, and this page reattaches to it. A finished model is
exported into the user folder and listed in every view as "your model".
"""
import streamlit as st

from app import train_ui, training_jobs

st.title("Train your own model")
st.caption("Any β from 0 to 0.5, your own latent size, MNIST, Fashion-MNIST or your own images. One job runs at a "
           "time; others wait in a queue. Stop keeps the last finished epoch; Resume continues exactly.")

allowed, why = training_jobs.training_allowed(st.get_option("server.address"))
if not allowed:
    st.warning(why)

plan = train_ui.settings_form()
busy = any(j.get("state") in training_jobs.ACTIVE for j in training_jobs.all_jobs())
if plan is not None:
    train_ui.estimate(plan, busy)
train_ui.start_button(plan, allowed)

st.subheader("Jobs")
train_ui.live_jobs_panel()

st.subheader("Your models")
train_ui.models_table()
