"""Predefined evenly-distributed class centroids (PEDCC), paper section 3.1, Algorithm 1.

n unit charges on the hypersphere S^{d-1} in R^d repel each other with a force
proportional to 1/|l_ij|^2; the paper integrates this motion for a fixed number of
iterations q and uses the final positions, scaled by alpha = sqrt(d), as class centres.

Everything is vectorised through the Gram matrix G = U U^T: for unit vectors
|u_i - u_j|^2 = 2 - 2 G_ij, so one iteration costs two (n, n, d) matrix products and no
Python loop over points.  The paper's dynamics run in float32, the convergence mode ends
in float64 (see generate_pedcc); results come back as float32.

The algorithm is numpy only, so `python -m csae_core pedcc` starts without importing torch;
generate_pedcc returns torch tensors (the model's centroid buffer) unless asked for numpy arrays.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CSAEError

EPS = 0.01  # paper: distances below eps are clamped to eps
LAMBDA = 0.01  # paper eq. 4: velocity "learning rate"
DEFAULT_ITERS = 1000  # paper's fixed-iteration mode (q); the paper gives no value
DEFAULT_TOL = 1e-12  # convergence mode: relative energy change over a window
CONVERGE_WARMUP = 20  # paper iterations run before the refinement in convergence mode
CONVERGE_WINDOW = 20  # iterations over which "stopped improving" is judged
COARSE_TOL = 1e-7  # stopping tolerance (relative energy change) of the float32 stage
POLISH_WORK = 2**26  # n*n*d up to which the float64 polish runs by default

# Minimum known Coulomb energy sum_{i<j} 1/|u_i - u_j| of n unit charges on the unit
# sphere in R^3 (Thomson problem), n = 2..60, from the table of the Wikipedia article
# "Thomson problem" (read from a stored copy of that table) and cross-checked against an
# independent list of the same values: they agree except n = 11 and 16, where Wikipedia
# has 40.596450510 and 92.911655302.  generate_pedcc(n, 3, converge=True) reaches
# 40.5964505082 and 92.9116553025 there, so the other list's 40.596450508 and
# 92.911655303 are used.  This module reached every n = 2..60 from at most 5 seeds,
# within 5e-8 (mostly within the table's rounding, 5e-10).  n = 2..6 and 12 are proven
# optima, the others best known.
KNOWN_THOMSON_ENERGY: dict[int, float] = {
    2: 0.500000000, 3: 1.732050808, 4: 3.674234614, 5: 6.474691495,
    6: 9.985281374, 7: 14.452977414, 8: 19.675287861, 9: 25.759986531,
    10: 32.716949460, 11: 40.596450508, 12: 49.165253058, 13: 58.853230612,
    14: 69.306363297, 15: 80.670244114, 16: 92.911655303, 17: 106.050404829,
    18: 120.084467447, 19: 135.089467557, 20: 150.881568334, 21: 167.641622399,
    22: 185.287536149, 23: 203.930190663, 24: 223.347074052, 25: 243.812760299,
    26: 265.133326317, 27: 287.302615033, 28: 310.491542358, 29: 334.634439920,
    30: 359.603945904, 31: 385.530838063, 32: 412.261274651, 33: 440.204057448,
    34: 468.904853281, 35: 498.569872491, 36: 529.122408375, 37: 560.618887731,
    38: 593.038503566, 39: 626.389009017, 40: 660.675278835, 41: 695.916744342,
    42: 732.078107544, 43: 769.190846459, 44: 807.174263085, 45: 846.188401061,
    46: 886.167113639, 47: 927.059270680, 48: 968.713455344, 49: 1011.557182654,
    50: 1055.182314726, 51: 1099.819290319, 52: 1145.418964319, 53: 1191.922290416,
    54: 1239.361474729, 55: 1287.772720783, 56: 1337.094945276, 57: 1387.383229253,
    58: 1438.618250640, 59: 1490.773335279, 60: 1543.830400976,
}


def alpha(d: int) -> float:
    """Paper eq. 5: scale factor sqrt(d) applied to the unit centroids."""
    return math.sqrt(d)



@dataclass
class PEDCCResult:
    """Output of :func:`generate_pedcc`.

    centroids: (n, d) float32 unit vectors (a torch.Tensor, or a numpy array with as_numpy=True).
    history: (frames, n, d) float32 unit vectors (first = initial, last = final) or None.
    iterations: paper steps + energy evaluations of the descent, for the returned run.
    seconds: wall time of the whole call (all restarts).
    converged: False in the fixed mode; in the convergence mode, whether the stopping test
        fired before max_iters.
    seed: seed whose run produced ``centroids`` (with restarts, the winning one).
    """

    centroids: Any  # torch.Tensor | np.ndarray
    iterations: int
    seconds: float
    converged: bool
    history: Any  # torch.Tensor | np.ndarray | None
    seed: int

    def scaled(self):
        """(n, d) class centres used for training: centroids * sqrt(d) (paper eq. 5)."""
        return self.centroids * alpha(self.centroids.shape[1])


def _field(u: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Tangential repulsive force, Coulomb energy and max pairwise cosine of unit rows u (n, d).

    Returns (f_t (n, d) in u's dtype, energy, max_cos).
    f_i = sum_j l_ij / |l_ij|^3 with l_ij = u_i - u_j, |l_ij| clamped at EPS (paper eq. 1),
    written as W.sum(1) * u - W @ u with W_ij = 1/|l_ij|^3; f_t = f - (u.f) u (eq. 2).
    """
    g = u @ u.T  # (n, n)
    d2 = np.maximum(2 - 2 * g, u.dtype.type(EPS * EPS))
    np.fill_diagonal(d2, np.inf)  # 1/|l_ii| = 0: no self-force
    inv = 1 / np.sqrt(d2)  # 1/|l_ij|
    w = inv * inv * inv
    f = w.sum(1, keepdims=True) * u - w @ u
    f_t = f - (u * f).sum(1, keepdims=True) * u
    np.fill_diagonal(g, -np.inf)
    # Sum in float64: a float32 sum would carry a ~1e-7 relative rounding error, while the
    # independent rounding errors of the n^2 float32 terms mostly cancel.
    return f_t, 0.5 * float(inv.sum(dtype=np.float64)), float(g.max())


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _History:
    """Keeps at most `cap` frames: first = init, last = final, evenly subsampled in between.

    Frames are taken every `stride` iterations; when the buffer fills, every other frame
    is dropped and the stride doubles, so the total count never exceeds `cap`.
    """

    def __init__(self, cap: int):
        self.cap = cap  # 0: keep nothing
        self.stride = 1
        self.frames: list[np.ndarray] = []
        self.last_it = -1

    def record(self, it: int, u: np.ndarray) -> None:
        if self.cap == 0 or it % self.stride:
            return
        self.frames.append(u.astype(np.float32))  # a copy
        self.last_it = it
        if len(self.frames) > self.cap - 1:  # keep one slot for the final frame
            self.frames = self.frames[::2]
            self.stride *= 2
            self.last_it = (len(self.frames) - 1) * self.stride

    def finish(self, it: int, u: np.ndarray) -> np.ndarray | None:
        """Stack the frames with the returned u as the last one (it replaces a frame taken
        at the final iteration `it`: the descent returns its best iterate, not its last)."""
        if self.cap == 0:
            return None
        if self.last_it == it:
            self.frames.pop()
        self.frames.append(u.astype(np.float32))
        return np.stack(self.frames)


def _paper_steps(u, v, steps, it0, hist):
    """Algorithm 1 loop body, `steps` times: eq. 3 (with the old velocity), normalise, eq. 4."""
    for k in range(steps):
        f_t, _, _ = _field(u)
        u = _normalize(u + v)
        v = v + LAMBDA * f_t
        hist.record(it0 + k + 1, u)
    return u, v


def _bb_step(s: np.ndarray, y: np.ndarray, long: bool) -> float:
    """Barzilai-Borwein step size from the move s and the change of the gradient y: the long (BB1) or the
    short (BB2) one, alternated by the caller; inf under negative curvature (e.g. near a saddle: the caller
    then takes the longest allowed step)."""
    sy = float((s * y).sum())
    if sy <= 0:
        return math.inf
    return float((s * s).sum()) / sy if long else sy / float((y * y).sum())


def _refine(u, it0, max_iters, tol, cos_tol, hist):
    """Riemannian gradient descent on the Coulomb energy E = sum_{i<j} 1/|u_i - u_j|.

    Why not just more paper iterations: eq. 3-4 have no friction and no step control.
    The velocity only accumulates lambda*f_t, overshoots early (the energy rises again
    during the first tens of iterations) and later the convergence crawls, because the
    step is never matched to the curvature: measured on the 3-D sphere, n=20 still has
    an energy gap of 0.05 after 1000 iterations (2e-6 after 5000).  Here the velocity is
    dropped: each point moves along its tangential force f_t (= minus the Riemannian
    gradient) and is renormalised (retraction).  Barzilai-Borwein step sizes with a
    non-monotone Armijo test (Raydan's global BB: a step is kept only if the energy ends
    below the highest of the last 10 kept energies) converge in tens to hundreds of
    iterations.  Stops when, over
    CONVERGE_WINDOW iterations, the lowest energy improved by less than tol (relative) and
    its max cosine moved by at most cos_tol.  Every energy evaluation counts as an iteration.
    Returns (lowest-energy u, iterations run, converged), u in the dtype of u.
    """
    f_t, e, max_cos = _field(u)
    best = (e, u, max_cos)
    recent = [e]  # last accepted energies: the non-monotone reference is their max
    trail = [(e, max_cos)]  # best (energy, max cosine) after each accepted step
    # Energy differences below `noise` are rounding: the n(n-1)/2 terms carry independent
    # errors of eps(dtype) relative, and their float64 sum one of eps(float64).
    pairs = u.shape[0] * (u.shape[0] - 1) / 2
    eps, eps64 = float(np.finfo(u.dtype).eps), float(np.finfo(np.float64).eps)
    noise = 16 * abs(e) * (eps / math.sqrt(pairs) + eps64)
    step = math.inf  # the first step is set by the cap below
    first = True
    it = it0
    while it < max_iters:
        gg = float((f_t * f_t).sum())
        f_max = float(np.linalg.norm(f_t, axis=1).max())
        if f_max == 0.0:  # exact equilibrium (e.g. two antipodal points)
            return best[1], it, True
        # Cap each point's move (0.05 rad on the first step, then 0.3 rad) so that one long
        # step cannot scramble the configuration.
        step = min(step, (0.05 if first else 0.3) / f_max)
        first = False
        u_new = _normalize(u + u.dtype.type(step) * f_t)
        f_new, e_new, c_new = _field(u_new)
        it += 1
        if e_new > max(recent) - 1e-4 * step * gg + noise and step * gg > noise:
            step *= 0.25  # not enough decrease: retry from u with a shorter step
            continue
        hist.record(it, u_new)
        step = _bb_step(u_new - u, f_t - f_new, long=bool(len(trail) % 2))  # the gradient is -f_t
        u, f_t = u_new, f_new
        recent = (recent + [e_new])[-10:]
        if e_new < best[0]:
            best = (e_new, u, c_new)
        trail.append((best[0], best[2]))
        if len(trail) > CONVERGE_WINDOW:
            e_old, c_old = trail.pop(0)
            if e_old - best[0] <= tol * abs(best[0]) and abs(c_old - best[2]) <= cos_tol:
                return best[1], it, True
    return best[1], it, False


def _check(name: str, value, minimum) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CSAEError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise CSAEError(f"{name} must be >= {minimum}, got {value}")


def _run(n, d, seed, iters, converge, max_iters, tol, polish, hist):
    """One seed: returns (u (n, d) unit rows, iterations, converged)."""
    u = _normalize(np.random.default_rng(seed).standard_normal((n, d)))  # a local generator
    hist.record(0, u)
    # The paper's dynamics and the first descent stage run in float32: 3.4x faster than
    # float64 at n=1000, d=512 (13.6 vs 47 ms per iteration on 2 cores).
    u = u.astype(np.float32)
    v = np.zeros_like(u)  # initial velocity
    if not converge:
        iters = DEFAULT_ITERS if iters is None else iters
        u, _ = _paper_steps(u, v, iters, 0, hist)
        return u, iters, False
    warm = min(CONVERGE_WARMUP if iters is None else iters, max_iters - 1)
    u, _ = _paper_steps(u, v, warm, 0, hist)
    u, it, converged = _refine(u, warm, max_iters, max(tol, COARSE_TOL), 2.0, hist)
    if polish:
        # float32 gradients are too noisy to settle the last ~1e-7 of the energy; float64
        # reaches the simplex / Thomson optimum to ~1e-12.
        u, it, converged = _refine(_normalize(u.astype(np.float64)), it, max_iters, tol, math.sqrt(tol), hist)
    return u, it, converged


MAX_WORK = 2**29  # n*n*d of one iteration (~0.5 G multiply-adds: n=1000, d=512 is ~50 ms); bigger is refused
MAX_DIM = 4096
MAX_ITERS = 1_000_000


def check_size(n: int, d: int, iters: int = 0, max_iters: int = 0) -> None:
    """Refuse, before anything is allocated, a PEDCC too big to run in bounded time and memory."""
    if d > MAX_DIM or n * n * d > MAX_WORK:
        raise CSAEError(f"{n} classes in {d} dimensions is too big a PEDCC (limits: dim <= {MAX_DIM} and "
                        f"classes^2 x dim <= {MAX_WORK:,}; e.g. 1000 classes x 512). Fix: fewer classes or dims.")
    if max(iters, max_iters) > MAX_ITERS:
        raise CSAEError(f"iterations must be <= {MAX_ITERS:,}, got {max(iters, max_iters):,}")


def _check_arguments(n, d, seed, iters, converge, max_iters, tol, history_frames, restarts) -> None:
    """generate_pedcc's arguments, each refused with one clear CSAEError."""
    _check("classes", n, 2)
    _check("dim", d, 2)
    _check("seed", seed, 0)
    if iters is not None:
        _check("iters", iters, 0 if converge else 1)
    _check("max_iters", max_iters, 1)
    check_size(n, d, iters or 0, max_iters)
    if converge and iters is not None and iters >= max_iters:
        raise CSAEError(f"iters ({iters}) must be < max_iters ({max_iters}) in convergence mode")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise CSAEError(f"tol must be a number in (0, 1), got {tol!r}")
    _check("history_frames", history_frames, 0)
    if history_frames == 1:
        raise CSAEError("history_frames must be 0 (no history) or >= 2 (first and last frame)")
    _check("restarts", restarts, 1)
    if restarts > 1 and not converge:
        raise CSAEError("restarts only applies to convergence mode: pass converge=True")


def generate_pedcc(
    n: int,
    d: int,
    *,
    seed: int = 0,
    iters: int | None = None,
    converge: bool = False,
    max_iters: int = 100_000,
    tol: float = DEFAULT_TOL,
    history_frames: int = 0,
    restarts: int = 1,
    polish: bool | None = None,
    as_numpy: bool = False,
) -> PEDCCResult:
    """Generate n evenly distributed unit centroids in R^d (centroids (n, d) float32).

    Fixed mode (default, the paper): exactly `iters` (default DEFAULT_ITERS) iterations of
    Algorithm 1, from N(0, I) points drawn with numpy's default_rng(seed).
    Convergence mode (`converge=True`): `iters` (default CONVERGE_WARMUP) paper iterations,
    then the damped descent of :func:`_refine` until energy and max cosine stop improving
    (relative energy change < tol over CONVERGE_WINDOW iterations) or `max_iters` total
    iterations.  The descent runs in float32 (until its energy changes by < COARSE_TOL),
    then, if `polish`, in float64 with `tol`; polish=None polishes when n*n*d <=
    POLISH_WORK, where float64 iterations are cheap (at n=1000, d=512 the float64 stage
    would take ~250 more iterations at 47 ms each).
    restarts > 1 (convergence mode) repeats from seeds seed, seed+1, ... and keeps the
    lowest energy, for the 3-D sphere where random starts can end in local minima.
    history_frames: 0 for no history, else at most that many (>= 2) frames.
    as_numpy: centroids and history as numpy arrays instead of torch tensors (torch is not imported).
    """
    _check_arguments(n, d, seed, iters, converge, max_iters, tol, history_frames, restarts)
    if polish is None:
        polish = n * n * d <= POLISH_WORK

    start = time.perf_counter()
    best = None
    for run_seed in range(seed, seed + restarts):
        hist = _History(history_frames)
        u, it, converged = _run(n, d, run_seed, iters, converge, max_iters, tol, polish, hist)
        u = _normalize(u.astype(np.float64))
        energy = _field(u)[1]
        if best is None or energy < best[0]:
            best = (energy, u, it, converged, hist.finish(it, u), run_seed)
    _, u, it, converged, history, run_seed = best
    u = u.astype(np.float32)
    if not as_numpy:
        import torch  # the model's centroid buffer is a tensor

        u = torch.from_numpy(u)
        history = None if history is None else torch.from_numpy(history)
    return PEDCCResult(
        centroids=u,
        iterations=it,
        seconds=time.perf_counter() - start,
        converged=converged,
        history=history,
        seed=run_seed,
    )


def pedcc_metrics(u) -> dict:
    """Spread metrics of centroids u (n, d), a torch tensor or numpy array; rows are normalised
    first, so scaled ones work.

    Distances are chordal distances between the unit vectors; energy = sum_{i<j} 1/|u_i-u_j|.
    simplex_*: for n <= d+1 the optimum is the regular simplex with all cosines -1/(n-1).
    known_min_energy / energy_gap: for d == 3, against KNOWN_THOMSON_ENERGY.
    """
    if hasattr(u, "detach"):  # a torch tensor, on any device
        u = u.detach().cpu().double().numpy()
    if not isinstance(u, np.ndarray) or u.ndim != 2 or u.dtype.kind not in "fiu":
        shape = tuple(u.shape) if isinstance(u, np.ndarray) else type(u).__name__
        raise CSAEError(f"centroids must be a 2-D array (classes, dim) of numbers, got {shape}")
    n, d = u.shape
    if n < 2:
        raise CSAEError(f"classes must be >= 2, got {n}")
    x = u.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if bool((norms == 0).any()) or not bool(np.isfinite(x).all()):
        raise CSAEError("centroids must be finite and non-zero")
    x = x / norms
    cos = np.clip(x @ x.T, -1.0, 1.0)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))  # float64: accurate unless points ~coincide
    iu = np.triu_indices(n, k=1)
    pair_cos, pair_dist = cos[iu], dist[iu]
    max_cos = float(pair_cos.max())
    energy = float((1.0 / pair_dist).sum())
    simplex = -1.0 / (n - 1) if n <= d + 1 else None
    known = KNOWN_THOMSON_ENERGY.get(n) if d == 3 else None
    return {
        "classes": n,
        "dim": d,
        "min_distance": float(pair_dist.min()),
        "max_distance": float(pair_dist.max()),
        "max_cosine": max_cos,
        "min_angle_deg": math.degrees(math.acos(max_cos)),
        "energy": energy,
        "simplex_max_cosine": simplex,
        "simplex_gap": None if simplex is None else max_cos - simplex,
        "known_min_energy": known,
        "energy_gap": None if known is None else energy - known,
    }
