"""Benchmark PEDCC generation: the convergence mode against the paper's fixed-iteration mode.

Run from the repository root:  python benchmarks/bench_pedcc.py [--threads 1] [--thomson]
One line per case: seconds, iterations, max cosine, gap to the simplex bound (n <= d+1),
min distance and energy of the unit centroids.  --thomson adds the 3-D sphere for
n = 2..60 against the known minimum energies.
"""

import argparse
import contextlib

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from csae_core.pedcc import DEFAULT_ITERS, generate_pedcc, pedcc_metrics

CASES = [(10, 40), (100, 512), (1000, 512)]


def line(mode: str, n: int, d: int, result) -> str:
    m = pedcc_metrics(result.centroids)
    gap = "n/a" if m["simplex_gap"] is None else f"{m['simplex_gap']:.2e}"
    return (
        f"{mode:<9} n={n:<5} d={d:<4} {result.seconds:8.3f} s  iters={result.iterations:<6} "
        f"converged={str(result.converged):<5} max_cos={m['max_cosine']:+.9f} "
        f"simplex_gap={gap:<9} min_dist={m['min_distance']:.9f} energy={m['energy']:.9f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="BLAS threads of numpy (default: the library's choice)")
    parser.add_argument("--paper-iters", type=int, default=DEFAULT_ITERS,
                        help=f"iterations of the paper's fixed mode (default {DEFAULT_ITERS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thomson", action="store_true", help="also run d=3, n=2..60")
    parser.add_argument("--restarts", type=int, default=5, help="seeds per n for --thomson")
    args = parser.parse_args()
    with threadpool_limits(args.threads) if args.threads else contextlib.nullcontext():
        blas = [f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info() if p["user_api"] == "blas"]
        print(f"numpy {np.__version__} ({', '.join(blas) or 'no BLAS found'}), seed {args.seed}")
        run(args)


def run(args) -> None:
    for n, d in CASES:
        converged = generate_pedcc(n, d, seed=args.seed, converge=True, as_numpy=True)
        print(line("converge", n, d, converged), flush=True)
        paper = generate_pedcc(n, d, seed=args.seed, iters=args.paper_iters, as_numpy=True)
        print(line("paper", n, d, paper), flush=True)

    if args.thomson:
        print(f"d=3 (Thomson problem), convergence mode, best of {args.restarts} seeds:")
        for n in range(2, 61):
            r = generate_pedcc(n, 3, seed=args.seed, converge=True, restarts=args.restarts, as_numpy=True)
            m = pedcc_metrics(r.centroids)
            print(f"n={n:<3} {r.seconds:6.2f} s  seed={r.seed}  energy={m['energy']:.9f}  "
                  f"known={m['known_min_energy']:.9f}  gap={m['energy_gap']:+.1e}", flush=True)


if __name__ == "__main__":
    main()
