#!/bin/bash
# One loan of an offline GPU machine, in one command (this file is a bundle's run.sh, written by
# `python checkpoints/zoo.py bundle`; README: "The zoo on a lent offline GPU machine").
#
#   bash run.sh [--device cuda|cpu] [--deadline-s 480] [--grace-s 60] [--jobs N] [--out PARTS_DIR]
#               [--compile auto|none|compile|cudagraph] [--max-parts 3]
#
# 1. installs the bundled wheels into ./site (pip --no-index --no-deps --target; never -e), code via PYTHONPATH
# 2. runs the CUDA tests (pytest -m cuda; skipped on a machine without CUDA)
# 3. measures the training throughput of each model kind (printed; kept in results/loans/)
# 4. trains the bundle's models in the zoo's order, as many at once as their GPU busy fractions allow (--jobs 0;
#    N: N at once): no epoch starts after --deadline-s seconds from now (the running epoch ends, the resume
#    state is kept); a hard stop follows --grace-s later
# 5. packs finished fp16 exports + evaluations, then resume states, into <= --max-parts parts of <= 16 MiB in
#    --out (3: the lent machine returns at most 64 MiB in all, logs included)
set -uo pipefail
start=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
device=cuda deadline=480 grace=60 jobs=0 compile=auto maxparts=3 out="$here/parts"
while [ $# -gt 0 ]; do
  case "$1" in
    --device|--deadline-s|--grace-s|--jobs|--compile|--out|--max-parts) ;;
    *) echo "run.sh: unknown option '$1'. Fix: see the options at the top of run.sh." >&2; exit 2 ;;
  esac
  [ $# -ge 2 ] || { echo "run.sh: $1 needs a value." >&2; exit 2; }
  case "$1" in
    --device) device=$2 ;; --deadline-s) deadline=$2 ;; --grace-s) grace=$2 ;;
    --jobs) jobs=$2 ;; --compile) compile=$2 ;; --out) out=$2 ;; --max-parts) maxparts=$2 ;;
  esac
  shift 2
done
case "$device" in cuda|cpu) ;; *) echo "run.sh: --device must be cuda or cpu, got '$device'." >&2; exit 2 ;; esac
for n in "$deadline" "$grace" "$jobs" "$maxparts"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "run.sh: --deadline-s, --grace-s, --jobs and --max-parts take whole numbers, got '$n'." >&2; exit 2; }
done
[ "$jobs" -gt 0 ] || [ "$device" = cuda ] || jobs=1  # on a GPU, 0: as many as the measured busy fractions allow
mkdir -p "$out" && out=$(cd "$out" && pwd) || { echo "run.sh: cannot create --out $out." >&2; exit 2; }
py=${PYTHON:-python3}
cd "$here"
export PYTHONPATH="$here/site:$here" CSAE_DATA_DIR="$here/data" PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1 CSAE_APP_WARMUP=0
loan="$here/results/loans/$(date -u +%Y%m%dT%H%M%SZ)-$device.json"
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }

step "install"
$py checkpoints/bundle.py install || { echo "run.sh: the offline install failed (above)." >&2; exit 1; }

step "CUDA tests"
if $py -c "import pytest" 2>/dev/null; then
  $py -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
else
  $py tests/test_cuda.py  # without pytest: the same tests, run by the file itself
fi
echo "CUDA tests exit status $? (training goes on either way: the loan is short)"

step "throughput"
$py checkpoints/bundle.py throughput --device "$device" --compile "$compile" --loan "$loan" \
  || echo "run.sh: the throughput step failed; training uses compile=none"

step "train (no epoch starts after +${deadline} s; hard stop at +$(( deadline + grace )) s)"
left=$(( start + deadline + grace - $(date +%s) ))
[ "$left" -gt 5 ] || left=5
timeout -k 10 "$left" $py checkpoints/bundle.py train --device "$device" --jobs "$jobs" --compile "$compile" \
  --loan "$loan" --stop-at $(( start + deadline ))
echo "training exit status $? (124: stopped by the hard deadline; the resume states of finished epochs are kept)"

step "pack"
$py checkpoints/zoo.py pack --out "$out" --runs --max-parts "$maxparts" || { echo "run.sh: packing failed (above)." >&2; exit 1; }
step "done: $(ls "$out" | wc -l) part(s) in $out"
