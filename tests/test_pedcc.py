"""Tests for csae_core.pedcc (PEDCC, paper section 3.1) against independent references:
the regular simplex for n <= d+1, the Thomson-problem energies on the 3-D sphere, and a
hand-built regular tetrahedron."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from csae_core.errors import CSAEError
from csae_core.pedcc import (
    DEFAULT_ITERS,
    KNOWN_THOMSON_ENERGY,
    PEDCCResult,
    generate_pedcc,
    pedcc_metrics,
)


def _pairwise_cosines(u: torch.Tensor) -> torch.Tensor:
    """Off-diagonal cosines of the rows of u, computed independently of the module (float64)."""
    x = u.double()
    x = x / x.norm(dim=1, keepdim=True)
    n = x.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    return (x @ x.T)[iu[0], iu[1]]


def _tetrahedron() -> torch.Tensor:
    """The 4 vertices of a regular tetrahedron inscribed in the unit sphere, (4, 3)."""
    v = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    return v / math.sqrt(3)


@pytest.mark.parametrize("n,d", [(10, 40), (2, 5), (5, 4)])
def test_converge_reaches_regular_simplex(n, d):
    result = generate_pedcc(n, d, seed=0, converge=True)
    cos = _pairwise_cosines(result.centroids)
    assert result.converged
    assert abs(cos.max().item() + 1 / (n - 1)) < 1e-6
    assert (cos.max() - cos.min()).item() < 1e-6  # all pairs equally far apart
    m = pedcc_metrics(result.centroids)
    assert m["simplex_max_cosine"] == pytest.approx(-1 / (n - 1))
    assert abs(m["simplex_gap"]) < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 10, 12])
def test_converge_reaches_known_thomson_energy(n):
    result = generate_pedcc(n, 3, seed=0, converge=True)
    m = pedcc_metrics(result.centroids)
    assert m["known_min_energy"] == KNOWN_THOMSON_ENERGY[n]
    # the table is rounded to 9 decimals
    assert abs(m["energy_gap"]) < 2e-9


def test_restarts_keep_the_lowest_energy_seed():
    # n = 37 on the sphere has local minima; several random starts find the best known one
    runs = [generate_pedcc(37, 3, seed=s, converge=True) for s in range(5)]
    energies = [pedcc_metrics(r.centroids)["energy"] for r in runs]
    best = min(range(5), key=energies.__getitem__)
    result = generate_pedcc(37, 3, seed=0, converge=True, restarts=5)
    assert result.seed == best
    assert torch.equal(result.centroids, runs[best].centroids)
    assert abs(pedcc_metrics(result.centroids)["energy_gap"]) < 1e-8


@pytest.mark.parametrize("converge", [False, True])
def test_numpy_and_torch_results_are_the_same_numbers(converge):
    t = generate_pedcc(6, 8, seed=2, iters=30, converge=converge, history_frames=4)
    a = generate_pedcc(6, 8, seed=2, iters=30, converge=converge, history_frames=4, as_numpy=True)
    assert isinstance(a.centroids, np.ndarray) and isinstance(a.history, np.ndarray)
    assert a.centroids.dtype == np.float32
    np.testing.assert_array_equal(t.centroids.numpy(), a.centroids)
    np.testing.assert_array_equal(t.history.numpy(), a.history)
    assert pedcc_metrics(a.centroids) == pedcc_metrics(t.centroids)


def test_numpy_path_does_not_import_torch():
    code = ("import sys; from csae_core.pedcc import generate_pedcc, pedcc_metrics; "
            "pedcc_metrics(generate_pedcc(4, 3, converge=True, as_numpy=True).centroids); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_same_seed_same_result_and_different_seed_differs():
    a = generate_pedcc(6, 8, seed=3, iters=50)
    b = generate_pedcc(6, 8, seed=3, iters=50)
    c = generate_pedcc(6, 8, seed=4, iters=50)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.allclose(a.centroids, c.centroids)
    assert a.seed == 3 and c.seed == 4
    d = generate_pedcc(6, 8, seed=3, converge=True)
    e = generate_pedcc(6, 8, seed=3, converge=True)
    assert torch.equal(d.centroids, e.centroids)


def test_seed_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_pedcc(5, 7, seed=9, iters=5)
    assert torch.equal(torch.rand(3), expected)


def test_fixed_mode_runs_exactly_iters_and_improves_on_random_init():
    result = generate_pedcc(10, 40, seed=1, iters=300, history_frames=2)
    assert result.iterations == 300
    assert not result.converged
    init, final = result.history[0], result.history[-1]
    assert torch.equal(final, result.centroids)
    assert _pairwise_cosines(final).max() < _pairwise_cosines(init).max() - 0.1
    assert pedcc_metrics(final)["energy"] < pedcc_metrics(init)["energy"]


def test_fixed_mode_default_iteration_count():
    assert generate_pedcc(3, 3, seed=0).iterations == DEFAULT_ITERS


@pytest.mark.parametrize("converge", [False, True])
def test_outputs_are_unit_float32_and_scaled_has_norm_sqrt_d(converge):
    n, d = 7, 16
    result = generate_pedcc(n, d, seed=2, iters=20, converge=converge)
    assert isinstance(result, PEDCCResult)
    assert result.centroids.shape == (n, d)
    assert result.centroids.dtype == torch.float32
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(n), atol=1e-6)
    scaled = result.scaled()
    assert torch.allclose(scaled.norm(dim=1), torch.full((n,), math.sqrt(d)), atol=1e-5)
    assert torch.allclose(scaled, result.centroids * math.sqrt(d))  # eq. 5: the same directions


@pytest.mark.parametrize("frames", [2, 5, 16])
def test_history_frames_shape_first_and_last(frames):
    n, d = 6, 9
    result = generate_pedcc(n, d, seed=5, iters=37, history_frames=frames)
    hist = result.history
    assert hist.dtype == torch.float32
    assert 2 <= hist.shape[0] <= frames
    assert hist.shape[1:] == (n, d)
    init = np.random.default_rng(5).standard_normal((n, d))  # the documented start: N(0, I), normalised
    init = (init / np.linalg.norm(init, axis=1, keepdims=True)).astype(np.float32)
    assert torch.equal(hist[0], torch.from_numpy(init))
    assert torch.equal(hist[-1], result.centroids)
    assert torch.allclose(hist.norm(dim=2), torch.ones(hist.shape[:2]), atol=1e-6)


def test_history_in_converge_mode_ends_on_result():
    result = generate_pedcc(8, 3, seed=0, converge=True, history_frames=10)
    assert 2 <= result.history.shape[0] <= 10
    assert torch.equal(result.history[-1], result.centroids)


def test_no_history_by_default():
    assert generate_pedcc(4, 3, seed=0, iters=3).history is None


def test_metrics_on_regular_tetrahedron():
    u = _tetrahedron()
    m = pedcc_metrics(u)
    edge = math.sqrt(8 / 3)
    assert m["classes"] == 4 and m["dim"] == 3
    assert m["energy"] == pytest.approx(6 / edge, abs=1e-12)
    assert m["max_cosine"] == pytest.approx(-1 / 3, abs=1e-12)
    assert m["min_distance"] == pytest.approx(edge, abs=1e-12)
    assert m["max_distance"] == pytest.approx(edge, abs=1e-12)
    assert m["min_angle_deg"] == pytest.approx(math.degrees(math.acos(-1 / 3)), abs=1e-9)
    assert m["simplex_max_cosine"] == pytest.approx(-1 / 3)
    assert m["simplex_gap"] == pytest.approx(0.0, abs=1e-12)
    assert m["known_min_energy"] == KNOWN_THOMSON_ENERGY[4]
    assert m["energy_gap"] == pytest.approx(0.0, abs=1e-9)
    # scaled (eq. 5) and float32 input give the same metrics: rows are normalised first
    m_scaled = pedcc_metrics((u * 5.0).float())
    assert m_scaled["energy"] == pytest.approx(m["energy"], rel=1e-6)


def test_metrics_without_references():
    # n > d + 1: no simplex bound; d != 3: no Thomson reference
    u = torch.eye(4).repeat(2, 1) * torch.tensor([1.0] * 4 + [-1.0] * 4)[:, None]  # cross-polytope
    m = pedcc_metrics(u)
    assert m["simplex_max_cosine"] is None and m["simplex_gap"] is None
    assert m["known_min_energy"] is None and m["energy_gap"] is None
    assert m["max_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert m["min_distance"] == pytest.approx(math.sqrt(2))
    assert m["max_distance"] == pytest.approx(2.0)


def test_known_thomson_table_anchors():
    assert set(KNOWN_THOMSON_ENERGY) == set(range(2, 61))
    anchors = {2: 0.5, 3: math.sqrt(3), 4: 6 / math.sqrt(8 / 3), 6: 1.5 + 6 * math.sqrt(2)}
    for n, energy in anchors.items():  # closed forms: segment, triangle, tetrahedron, octahedron
        assert KNOWN_THOMSON_ENERGY[n] == pytest.approx(energy, abs=5e-10)
    # n = 5 (triangular bipyramid) and 12 (icosahedron), the proven optima, from their coordinates
    phi = (1 + math.sqrt(5)) / 2
    ico = [p for a in (1, -1) for b in (phi, -phi) for p in ((0, a, b), (a, b, 0), (b, 0, a))]
    bipyramid = [(0, 0, 1), (0, 0, -1)] + [(math.cos(2 * math.pi * k / 3), math.sin(2 * math.pi * k / 3), 0)
                                           for k in range(3)]
    for n, points in ((5, bipyramid), (12, ico)):
        x = np.array(points, dtype=np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        energy = sum(1 / np.linalg.norm(x[i] - x[j]) for i in range(n) for j in range(i))
        assert KNOWN_THOMSON_ENERGY[n] == pytest.approx(energy, abs=5e-10)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n=1, d=3), "classes must be >= 2, got 1"),
        (dict(n=4, d=1), "dim must be >= 2, got 1"),
        (dict(n=4, d=3, iters=0), "iters must be >= 1, got 0"),
        (dict(n=4, d=3, iters=-5, converge=True), "iters must be >= 0, got -5"),
        (dict(n=4, d=3, max_iters=0), "max_iters must be >= 1, got 0"),
        (dict(n=4, d=3, converge=True, iters=10, max_iters=10), "must be < max_iters"),
        (dict(n=4, d=3, tol=0.0), "tol must be"),
        (dict(n=4, d=3, history_frames=1), "history_frames must be 0"),
        (dict(n=4, d=3, history_frames=-1), "history_frames must be >= 0"),
        (dict(n=4, d=3, seed=-1), "seed must be >= 0"),
        (dict(n=4.0, d=3), "classes must be an integer"),
        (dict(n=4, d=3, restarts=0, converge=True), "restarts must be >= 1"),
        (dict(n=4, d=3, restarts=2), "restarts only applies to convergence mode"),
    ],
)
def test_bad_arguments_raise_csae_error(kwargs, message):
    n, d = kwargs.pop("n"), kwargs.pop("d")
    with pytest.raises(CSAEError, match=message):
        generate_pedcc(n, d, **kwargs)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.ones(1, 3), torch.zeros(3, 3)])
def test_metrics_bad_input_raises_csae_error(bad):
    with pytest.raises(CSAEError):
        pedcc_metrics(bad)
