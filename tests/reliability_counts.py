"""Counters that the reliability tests keep for results/reliability.md (benchmarks/reliability_report.py).

`record(name, n)` appends one JSON line to the file named by $CSAE_RELIABILITY_COUNTS, when set; in a plain
test run it does nothing. The report script sums the lines per name.
"""
from __future__ import annotations

import json
import os

ENV_VAR = "CSAE_RELIABILITY_COUNTS"


def record(name: str, n: int = 1) -> None:
    path = os.environ.get(ENV_VAR)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "n": int(n)}) + "\n")
