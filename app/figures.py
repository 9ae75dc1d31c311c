"""Plotly figure builders: arrays in, go.Figure out, no Streamlit calls (so they are testable)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SPHERE_CIRCLES = (5, 6)  # latitude circles, meridian great circles of the wireframe unit sphere


def _sphere_wireframe(points_per_circle: int = 73) -> go.Scatter3d:
    """The unit sphere as one line trace of latitude and meridian circles. Not a translucent go.Surface: a
    browser without a GPU (software GL) draws that slowly; with the wireframe the PEDCC view's first visit
    went from 2.3 to 1.4 s (`benchmarks/bench_first_visit.py`, README)."""
    lats, lons = SPHERE_CIRCLES
    t = np.linspace(0, 2 * np.pi, points_per_circle)
    circles = [np.stack([np.cos(a) * np.cos(t), np.cos(a) * np.sin(t), np.full_like(t, np.sin(a))], 1)
               for a in np.linspace(-np.pi / 3, np.pi / 3, lats)]
    circles += [np.stack([np.cos(t) * np.cos(b), np.cos(t) * np.sin(b), np.sin(t)], 1)
                for b in np.linspace(0, np.pi, lons, endpoint=False)]
    # NaN rows break the line between circles; float32 and rounding keep the JSON small.
    xyz = np.concatenate([np.vstack([c, np.full((1, 3), np.nan)]) for c in circles]).round(4).astype(np.float32)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", hoverinfo="skip",
                        line=dict(color="#9ecae1", width=2), name="unit sphere")


def _points(u: np.ndarray) -> go.Scatter3d:
    n = len(u)
    return go.Scatter3d(x=u[:, 0], y=u[:, 1], z=u[:, 2], mode="markers",
                        marker=dict(size=6, color=np.arange(n), colorscale="Turbo", line=dict(width=0)),
                        text=[f"centroid {i}" for i in range(n)], hoverinfo="text", name="centroids")


def sphere_figure(history: np.ndarray, frame_labels: list[str] | None = None, height: int = 560) -> go.Figure:
    """PEDCC points on the unit sphere; with several frames (F, n, 3), a play button and a slider
    that scrub through the convergence. The figure opens on the final frame."""
    history = np.asarray(history, dtype=float)
    if history.ndim == 2:
        history = history[None]
    frames_n = len(history)
    labels = frame_labels or [str(i) for i in range(frames_n)]
    fig = go.Figure(data=[_sphere_wireframe(), _points(history[-1])])
    # No axes grid, lines or hover spikes: the wireframe is the frame of reference (and each costs drawing time).
    axis = dict(range=[-1.15, 1.15], showbackground=False, title="", showticklabels=False, showgrid=False,
                zeroline=False, showline=False, showspikes=False)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), showlegend=False,
                      scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                                 camera=dict(eye=dict(x=1.05, y=1.05, z=0.8))))  # closer than plotly's 1.25
    if frames_n > 1:
        # Frames replace only trace 1 (the points): the sphere is sent once.
        fig.frames = [go.Frame(data=[_points(u)], traces=[1], name=labels[i]) for i, u in enumerate(history)]
        anim = dict(frame=dict(duration=80, redraw=True), transition=dict(duration=0), mode="immediate")
        play = dict(label="▶ play", method="animate", args=[None, {**anim, "fromcurrent": False}])
        pause = dict(label="❚❚ pause", method="animate",
                     args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])
        fig.update_layout(
            updatemenus=[dict(type="buttons", showactive=False, x=0.02, y=0.02, xanchor="left", yanchor="bottom",
                              buttons=[play, pause])],
            sliders=[dict(active=frames_n - 1, x=0.2, len=0.78, y=0.02, yanchor="bottom",
                          currentvalue=dict(prefix="frame "),
                          steps=[dict(label=labels[i], method="animate",
                                      args=[[labels[i]], dict(frame=dict(duration=0, redraw=True), mode="immediate")])
                                 for i in range(frames_n)])])
    return fig


def line_figure(x: list, y: list, xtitle: str, ytitle: str, hline: float | None = None,
                hline_label: str = "", height: int = 260) -> go.Figure:
    """A small line chart, optionally with a dashed reference line (e.g. the best known energy)."""
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers", marker=dict(size=4)))
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dash", line_color="gray", annotation_text=hline_label)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), xaxis_title=xtitle, yaxis_title=ytitle)
    return fig


def cosine_histogram(cosines: np.ndarray, simplex: float | None = None, height: int = 300) -> go.Figure:
    """Histogram of pairwise cosines between centroids, with the regular simplex's -1/(n-1) marked."""
    cosines = np.asarray(cosines)
    # Bins of at least 0.0025: a converged PEDCC (spread ~1e-6) should read as one spike, not as noise.
    width = max(float(np.ptp(cosines)) / 60, 0.0025)
    fig = go.Figure(go.Histogram(x=cosines, xbins=dict(size=width), marker_color="#3182bd",
                                 hovertemplate="cosine %{x}<br>%{y} pairs<extra></extra>"))
    if simplex is not None:
        fig.add_vline(x=simplex, line_dash="dash", line_color="crimson",
                      annotation_text=f"simplex −1/(n−1) = {simplex:.4f}")
    lo, hi = float(cosines.min()), float(cosines.max())
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), bargap=0.05,
                      xaxis=dict(title="cosine between two centroids", range=[min(lo, simplex or lo) - 0.05,
                                                                               max(hi, simplex or hi) + 0.05]),
                      yaxis_title="pairs")
    return fig


def distance_heatmap(dist: np.ndarray, names: list[str], upper_only: bool = False, height: int = 460) -> go.Figure:
    """Fig. 10: pairwise distances with class names on both axes and the values on hover (and in the
    cells for up to 12 classes). `upper_only` blanks the lower triangle and the diagonal, as the paper does.
    The colour scale starts at 0, so near-equal distances look equal (as they are) instead of the
    colour range stretching over differences in the 4th decimal."""
    z = np.array(dist, dtype=float)
    if upper_only:
        z[np.tril_indices(len(z))] = np.nan
    names = [str(n) for n in names]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Viridis", hoverongaps=False, zmin=0, zmax=float(np.nanmax(dist)),
        texttemplate="%{z:.2f}" if len(z) <= 12 else None,
        hovertemplate="%{y} ↔ %{x}<br>distance %{z:.4f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category", side="top"))
    return fig


def latent_scatter(proj: np.ndarray, labels: np.ndarray, names: list[str], centroids: np.ndarray | None = None,
                   axis_titles: list[str] | None = None, height: int = 620) -> go.Figure:
    """Projected latents (N, 2|3) coloured by class; the projected PEDCC centroids as black diamonds."""
    proj, labels = np.asarray(proj), np.asarray(labels)
    three = proj.shape[1] == 3
    scatter = go.Scatter3d if three else go.Scatter
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    for k, name in enumerate(names):
        sel = labels == k
        if not sel.any():
            continue
        coords = dict(x=proj[sel, 0], y=proj[sel, 1], **({"z": proj[sel, 2]} if three else {}))
        fig.add_trace(scatter(**coords, mode="markers", name=str(name),
                              marker=dict(size=3 if three else 5, opacity=0.6, color=palette[k % len(palette)])))
    if centroids is not None:
        c = np.asarray(centroids)
        coords = dict(x=c[:, 0], y=c[:, 1], **({"z": c[:, 2]} if three else {}))
        fig.add_trace(scatter(**coords, mode="markers+text", name="PEDCC centroids", text=[str(n) for n in names],
                              textposition="top center",
                              marker=dict(size=8 if three else 14, color="black", symbol="diamond",
                                          line=dict(width=1, color="white"))))
    titles = axis_titles or ["PC1", "PC2", "PC3"]
    if three:
        fig.update_layout(scene=dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2]))
    else:
        fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
        fig.update_yaxes(scaleanchor="x", scaleratio=1)  # equal scales: distances read true
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"))
    return fig
