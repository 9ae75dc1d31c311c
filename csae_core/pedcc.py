"""Predefined evenly-distributed class centroids (PEDCC), paper section 3.1, Algorithm 1.

n unit charges on the hypersphere S^{d-1} in R^d repel each other with a force
proportional to 1/|l_ij|^2; the paper integrates this motion for a fixed number of
iterations q and uses the final positions, scaled by alpha = sqrt(d), as class centres.

Everything is vectorised through the Gram matrix G = U U^T: for unit vectors
|u_i - u_j|^2 = 2 - 2 G_ij, so one iteration costs two (n, n, d) matrix products and no
Python loop over points.  Computation is done in float64; results come back as float32.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .errors import CSAEError

EPS = 0.01  # paper: distances below eps are clamped to eps
LAMBDA = 0.01  # paper eq. 4: velocity "learning rate"
DEFAULT_ITERS = 1000  # paper's fixed-iteration mode (q); the paper gives no value
DEFAULT_TOL = 1e-10  # convergence mode: relative energy change over a window
CONVERGE_WARMUP = 20  # paper iterations run before the refinement in convergence mode
CONVERGE_WINDOW = 20  # iterations over which "stopped improving" is judged
SINGLE_THREAD_WORK = 2**23  # n*n*d up to which one thread is used (see _threads_for)
COARSE_TOL = 1e-7  # stopping tolerance of the float32 stage of the convergence mode

# Minimum known Coulomb energy sum_{i<j} 1/|u_i - u_j| of n unit charges on the unit
# sphere in R^3 (Thomson problem). Values for n = 2..60 copied from the table of the
# Wikipedia article "Thomson problem" (read from a stored copy of that table); they agree
# with an independent copy of the list except n = 11 and 16, where the two differ in the
# 9th decimal (40.596450508 / 92.911655303) -- the Wikipedia values are kept.
# n = 2..6 and 12 are proven optima; the others are the best known configurations.
KNOWN_THOMSON_ENERGY: dict[int, float] = {
    2: 0.500000000, 3: 1.732050808, 4: 3.674234614, 5: 6.474691495,
    6: 9.985281374, 7: 14.452977414, 8: 19.675287861, 9: 25.759986531,
    10: 32.716949460, 11: 40.596450510, 12: 49.165253058, 13: 58.853230612,
    14: 69.306363297, 15: 80.670244114, 16: 92.911655302, 17: 106.050404829,
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


ALPHA = alpha


@dataclass
class PEDCCResult:
    """Output of :func:`generate_pedcc`.

    centroids: (n, d) float32 unit vectors.
    history: (frames, n, d) float32 unit vectors (first = initial, last = final) or None.
    iterations: iterations run (paper + refinement) for the returned configuration.
    seconds: wall time of the whole call.
    converged: True only in convergence mode when the stopping test fired before max_iters.
    seed: seed whose run produced ``centroids`` (with restarts, the winning one).
    """

    centroids: torch.Tensor
    iterations: int
    seconds: float
    converged: bool
    history: torch.Tensor | None
    seed: int

    def scaled(self) -> torch.Tensor:
        """(n, d) class centres used for training: centroids * sqrt(d) (paper eq. 5)."""
        return self.centroids * alpha(self.centroids.shape[1])


def _field(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Tangential repulsive force, Coulomb energy and max pairwise cosine of unit rows u (n, d).

    Returns (f_t (n, d), energy (scalar tensor), max_cos).
    f_i = sum_j l_ij / |l_ij|^3 with l_ij = u_i - u_j, |l_ij| clamped at EPS (paper eq. 1),
    written as W.sum(1) * u - W @ u with W_ij = 1/|l_ij|^3; f_t = f - (u.f) u (eq. 2).
    """
    g = u @ u.T
    d2 = (2.0 - 2.0 * g).clamp_min(EPS * EPS)
    d2.fill_diagonal_(math.inf)  # 1/|l_ii| = 0: no self-force
    inv = d2.rsqrt()  # 1/|l_ij|
    w = inv * inv * inv
    f = w.sum(1, keepdim=True) * u - w @ u
    f_t = f - (u * f).sum(1, keepdim=True) * u
    g.fill_diagonal_(-math.inf)
    return f_t, 0.5 * inv.sum(), g.max().item()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


class _History:
    """Keeps at most `cap` frames: first = init, last = final, evenly subsampled in between.

    Frames are taken every `stride` iterations; when the buffer fills, every other frame
    is dropped and the stride doubles, so the total count never exceeds `cap`.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.stride = 1
        self.frames: list[torch.Tensor] = []
        self.last_it = -1

    def record(self, it: int, u: torch.Tensor) -> None:
        if self.cap == 0 or it % self.stride:
            return
        self.frames.append(u.to(torch.float32).clone())
        self.last_it = it
        if len(self.frames) > self.cap - 1:  # keep one slot for the final frame
            self.frames = self.frames[::2]
            self.stride *= 2
            self.last_it = (len(self.frames) - 1) * self.stride

    def finish(self, it: int, u: torch.Tensor) -> torch.Tensor | None:
        """Stack the frames, appending the final u unless it was taken at iteration `it`."""
        if self.cap == 0:
            return None
        if self.last_it != it:
            self.frames.append(u.to(torch.float32).clone())
        return torch.stack(self.frames)


def _paper_steps(u, v, steps, it0, hist):
    """Algorithm 1 loop body, `steps` times: eq. 3 (with the old velocity), normalise, eq. 4."""
    for k in range(steps):
        f_t, _, _ = _field(u)
        u = _normalize(u + v)
        v = v + LAMBDA * f_t
        hist.record(it0 + k + 1, u)
    return u, v


def _refine(u, it0, max_iters, tol, cos_tol, hist):
    """Riemannian gradient descent on the Coulomb energy E = sum_{i<j} 1/|u_i - u_j|.

    Why: the paper's update (eq. 3-4) is frictionless, so the charges keep their kinetic
    energy and oscillate around the equilibrium instead of settling on it.  Here the
    velocity is dropped: each point moves along its tangential force f_t (= minus the
    Riemannian gradient) and is renormalised (retraction).  Barzilai-Borwein step sizes
    with a non-monotone Armijo test (Raydan's global BB) converge in tens to hundreds of
    iterations where a fixed step needs tens of thousands.  Stops when, over
    CONVERGE_WINDOW iterations, the lowest energy improved by less than tol (relative) and
    its max cosine moved by at most cos_tol.  Every energy evaluation counts as an iteration.
    Returns (lowest-energy u, iterations run, converged), u in the dtype of u.
    """
    f_t, energy, max_cos = _field(u)
    e = energy.item()
    best = (e, u, max_cos)
    recent = [e]  # last accepted energies: the non-monotone reference is their max
    trail = [(e, max_cos)]  # best (energy, max cosine) after each accepted step
    noise = 16 * torch.finfo(u.dtype).eps * abs(e)  # energy differences below this are rounding
    step = 0.05 / f_t.norm(dim=1).max().clamp_min(1e-300).item()  # first move: 0.05 rad
    it = it0
    while it < max_iters:
        gg = (f_t * f_t).sum().item()
        # Cap each point's move at 0.3 rad so one long BB step cannot scramble the points.
        step = min(step, 0.3 / f_t.norm(dim=1).max().clamp_min(1e-300).item())
        u_new = _normalize(u + step * f_t)
        f_new, energy, c_new = _field(u_new)
        e_new = energy.item()
        it += 1
        if e_new > max(recent) - 1e-4 * step * gg + noise and step * gg > noise:
            step *= 0.25  # not enough decrease: retry from u with a shorter step
            continue
        hist.record(it, u_new)
        s = u_new - u
        y = f_t - f_new  # change of the gradient (gradient = -f_t)
        sy = (s * y).sum().item()
        if sy > 0:  # alternate the long (BB1) and short (BB2) step sizes
            step = (s * s).sum().item() / sy if len(trail) % 2 else sy / (y * y).sum().item()
        else:  # negative curvature, e.g. near a saddle: take the longest allowed step
            step = math.inf
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


@contextmanager
def _threads_for(n: int, d: int):
    """Run small problems single-threaded, restoring torch's thread count afterwards.

    Why: an (n, n, d) product this small gains nothing from a second thread, while on a
    busy machine every OpenMP parallel region can wait a whole scheduler tick for its
    second thread (measured on 2 shared cores: 32 ms instead of 4 us per 10x40 matmul).
    """
    before = torch.get_num_threads()
    small = n * n * d <= SINGLE_THREAD_WORK
    if small and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before != 1:
            torch.set_num_threads(before)


def _check(name: str, value, minimum) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CSAEError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise CSAEError(f"{name} must be >= {minimum}, got {value}")


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
) -> PEDCCResult:
    """Generate n evenly distributed unit centroids in R^d (returns (n, d) float32).

    Fixed mode (default, the paper): exactly `iters` (default DEFAULT_ITERS) iterations of
    Algorithm 1.  Convergence mode (`converge=True`): `iters` (default CONVERGE_WARMUP)
    paper iterations, then the damped refinement of :func:`_refine` until the energy and
    max cosine stop improving or `max_iters` total iterations; `restarts` > 1 repeats this
    from seeds seed, seed+1, ... and keeps the lowest-energy result (useful on the 3-D
    sphere, where random starts can end in local minima).
    history_frames: 0 for none, else at most that many (>= 2) frames of the trajectory.
    """
    _check("classes", n, 2)
    _check("dim", d, 2)
    _check("seed", seed, 0)
    if iters is not None:
        _check("iters", iters, 0 if converge else 1)
    _check("max_iters", max_iters, 1)
    _check("restarts", restarts, 1)
    if restarts > 1 and not converge:
        raise CSAEError("restarts only applies to convergence mode: pass converge=True")
    if not isinstance(tol, (int, float)) or not (0 < tol < 1):
        raise CSAEError(f"tol must be in (0, 1), got {tol!r}")
    _check("history_frames", history_frames, 0)
    if history_frames == 1:
        raise CSAEError("history_frames must be 0 (no history) or >= 2 (first and last frame)")
    if converge and iters is not None and iters >= max_iters:
        raise CSAEError(f"iters ({iters}) must be < max_iters ({max_iters}) in convergence mode")

    start = time.perf_counter()
    best = None
    with _threads_for(n, d):
        for r in range(restarts):
            run_seed = seed + r
            gen = torch.Generator().manual_seed(run_seed)
            u = _normalize(torch.randn(n, d, generator=gen, dtype=torch.float64))
            v = torch.zeros_like(u)  # initial velocity
            hist = _History(history_frames)
            hist.record(0, u)
            if converge:
                warm = CONVERGE_WARMUP if iters is None else iters
                warm = min(warm, max_iters - 1)
                u, v = _paper_steps(u.float(), v.float(), warm, 0, hist)
                # Bulk of the descent in float32 (3x faster for large n), then polish in
                # float64: float32 cannot resolve the 1e-6 max-cosine target.
                u, it, _ = _refine(u, warm, max_iters, max(tol, COARSE_TOL), 2.0, hist)
                u = _normalize(u.double())
                u, it, converged = _refine(u, it, max_iters, tol, math.sqrt(tol), hist)
            else:
                it = DEFAULT_ITERS if iters is None else iters
                u, v = _paper_steps(u.float(), v.float(), it, 0, hist)
                converged = False
            energy = _field(_normalize(u.double()))[1].item()
            if best is None or energy < best[0]:
                best = (energy, u, it, converged, hist.finish(it, u), run_seed)
    _, u, it, converged, history, run_seed = best
    return PEDCCResult(
        centroids=u.to(torch.float32),
        iterations=it,
        seconds=time.perf_counter() - start,
        converged=converged,
        history=history,
        seed=run_seed,
    )


def pedcc_metrics(u: torch.Tensor) -> dict:
    """Spread metrics of centroids u (n, d); rows are normalised first, so scaled ones work.

    Distances are chordal distances between the unit vectors; energy = sum_{i<j} 1/|u_i-u_j|.
    simplex_*: for n <= d+1 the optimum is the regular simplex with all cosines -1/(n-1).
    known_min_energy / energy_gap: for d == 3, against KNOWN_THOMSON_ENERGY.
    """
    if not isinstance(u, torch.Tensor) or u.dim() != 2:
        raise CSAEError(f"centroids must be a 2-D tensor (classes, dim), got {getattr(u, 'shape', type(u))}")
    n, d = u.shape
    if n < 2:
        raise CSAEError(f"classes must be >= 2, got {n}")
    x = u.detach().to("cpu", torch.float64)
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()) or not bool(torch.isfinite(x).all()):
        raise CSAEError("centroids must be finite and non-zero")
    x = x / norms
    cos = (x @ x.T).clamp(-1.0, 1.0)
    dist = torch.cdist(x, x)  # direct differences: no cancellation for close points
    iu = torch.triu_indices(n, n, offset=1)
    pair_cos, pair_dist = cos[iu[0], iu[1]], dist[iu[0], iu[1]]
    max_cos = pair_cos.max().item()
    energy = (1.0 / pair_dist).sum().item()
    simplex = -1.0 / (n - 1) if n <= d + 1 else None
    known = KNOWN_THOMSON_ENERGY.get(n) if d == 3 else None
    return {
        "classes": n,
        "dim": d,
        "min_distance": pair_dist.min().item(),
        "max_distance": pair_dist.max().item(),
        "max_cosine": max_cos,
        "min_angle_deg": math.degrees(math.acos(max_cos)),
        "energy": energy,
        "simplex_max_cosine": simplex,
        "simplex_gap": None if simplex is None else max_cos - simplex,
        "known_min_energy": known,
        "energy_gap": None if known is None else energy - known,
    }
