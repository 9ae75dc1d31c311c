"""The zoo on a lent, offline GPU machine, and the one way trained models travel back.

    python checkpoints/zoo.py bundle --out DIR --recipe paper --wheels ../shared/wheels-py312   # here
    bash DIR/run.sh --device cuda --deadline-s 480 --out $OUT      # there: install, CUDA tests, throughput, train, pack
    python checkpoints/zoo.py unpack $OUT/zoo-part*.tar.gz         # here: models into checkpoints/, states into runs/

A bundle is a folder of at most --budget-mib: the code (no checkpoints), the data its models need, the wheels
the machine lacks, the resume states of models an earlier loan left unfinished, BUNDLE.json (recipe and job
list) and run.sh. Results come back as tar.gz parts of at most 16 MiB (such a machine returns at most 8 files
and 64 MiB in all; run.sh packs 3 unless --max-parts says otherwise): finished fp16 exports with their
evaluations, then the resume states of unfinished runs. `zoo.py pack`, run.sh
and `zoo.py unpack` all go through `pack_parts` / `unpack_parts` below.

run.sh calls `python checkpoints/bundle.py install|throughput|train` (this module's own small CLI).
This module is loaded by zoo.py beside it; the functions take the zoo module as `zoo` for its paths and plan.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath

CODE_ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MAX_PARTS = 8  # what a lent machine may return: 8 files of <= 16 MiB (and 64 MiB in all: run.sh packs 3)
PACK_MEMBER = "zoo-pack.json"  # in every part: which pack it belongs to, so parts of two packs never mix
LOANS = "results/loans"  # each loan's throughput and outcome, brought back with its parts
MAX_MEMBER_BYTES, MAX_UNPACK_BYTES = 64 * 2**20, 512 * 2**20
# Where an unpacked member may land: nothing else (no code, no dot-files, no manifest) is ever written.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
ALLOWED = re.compile(rf"(checkpoints/{_NAME}/{_NAME}\.(json|safetensors)|results/eval/{_NAME}/{_NAME}\.json"
                     rf"|{LOANS}/{_NAME}\.json|runs/zoo/{_NAME}/{_NAME}/{_NAME}/{_NAME})")
CODE = ("csae_core/*.py", "checkpoints/zoo.py", "checkpoints/bundle.py", "tests/test_cuda.py", "pytest.ini",
        "requirements.txt")
# The wheels the lent machine lacks (pip download names, and the module each provides).
WHEELS = {"pytorch-wavelets==1.3.0": "pytorch_wavelets", "PyWavelets==1.10.0": "pywt",
          "setuptools==81.0.0": "pkg_resources"}


def _error(msg: str):
    from csae_core.errors import CSAEError
    return CSAEError(msg)


def _regular(p: Path) -> bool:
    """A regular file reached through no symbolic link (neither it nor a folder above it)."""
    try:
        return stat.S_ISREG(os.lstat(p).st_mode) and os.path.realpath(p) == os.path.abspath(p)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- packing

def checkpoint_unit(zoo, meta_path: Path) -> list[Path] | None:
    """A finished export: its JSON, the weights it names, its evaluation; None if any is missing or a link."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != "csae-checkpoint/1":
        return None
    weights = meta_path.parent / str(meta.get("weights", ""))
    ev = zoo.EVAL / meta_path.parent.name / meta_path.name
    files = [weights, ev, meta_path]
    ok = weights.parent == meta_path.parent and all(_regular(p) for p in files)
    return files if ok else None


def run_unit(run_dir: Path) -> list[Path]:
    """What resumes a run elsewhere: the resume state, the log, the snapshot checkpoints (exported at the end)
    and, when training is done but the export is not, the final checkpoint."""
    state = run_dir / "train_state.safetensors"
    files = [run_dir / "log.jsonl"]
    done = False
    try:
        from safetensors import safe_open
        with safe_open(str(state), "pt") as f:  # the header only: a state is ~10 MB
            meta = json.loads((f.metadata() or {}).get("json") or "{}")
        done = int(meta.get("epoch", 0)) >= int((meta.get("train") or {}).get("epochs", 10**9))
    except Exception:  # an unreadable state is still packed: train() explains it on resume
        pass
    for js in sorted(run_dir.glob("*.json")):
        if js.name.startswith("epoch") or (done and js.name == "last.json"):
            try:
                files += [run_dir / str(json.loads(js.read_text()).get("weights", "")), js]
            except (OSError, ValueError):
                continue
    return [p for p in files if _regular(p) and p.parent == run_dir] + [state]


def _unfinished(zoo, run_dir: Path) -> bool:
    recipe, ds, name = run_dir.parts[-3:]
    meta = zoo._json(zoo.CKPT / ds / f"{name}.json") or {}
    return not (meta.get("recipe") == recipe and (zoo.EVAL / ds / f"{name}.json").is_file())


def pack_units(zoo, since: float = 0.0, runs: bool = False) -> list[list[Path]]:
    """What `pack` ships, most valuable first: finished exports (final models before epoch snapshots), loose
    evaluations and loan reports, then (with `runs`) the resume states of unfinished runs under runs/zoo/."""
    new = lambda p: p.stat().st_mtime >= since
    metas = sorted((p for p in zoo.CKPT.glob("*/*.json") if _regular(p) and new(p)),
                   key=lambda p: ("-epoch" in p.name, p.parent.name, p.name))
    units, skipped = [], []
    for m in metas:
        u = checkpoint_unit(zoo, m)
        (units.append(u) if u else skipped.append(m))
    if skipped:
        print(f"not packed (no evaluation yet, or a link): {', '.join(p.stem for p in skipped)}")
    taken = {p for u in units for p in u}
    loose = [p for p in [*zoo.EVAL.glob("*/*.json"), *(zoo.ROOT / LOANS).glob("*.json")]
             if p not in taken and _regular(p) and new(p)]
    units += [[p] for p in sorted(loose)]
    if runs:
        states = sorted((zoo.ROOT / "runs" / "zoo").glob("*/*/*/train_state.safetensors"))
        units += [run_unit(s.parent) for s in states
                  if _regular(s) and new(s) and _unfinished(zoo, s.parent)]
    return units


def _group(units: list[list[Path]], part_bytes: int, max_parts: int):
    """First-fit of whole units into parts by raw size (fp16 weights barely compress); what does not fit
    in `max_parts` parts is left out (and named)."""
    limit = int(part_bytes * 0.95)  # room for tar headers and a gzip that does not shrink
    parts: list[list[Path]] = []
    sizes: list[int] = []
    left = []
    for unit in units:
        n = sum(p.stat().st_size for p in unit)
        i = next((i for i, s in enumerate(sizes) if s + n <= limit), None)
        if i is None and len(parts) < max_parts and n <= limit:
            parts.append([])
            sizes.append(0)
            i = len(parts) - 1
        if i is None:
            left.append(unit)
            continue
        parts[i] += unit
        sizes[i] += n
    return parts, left


def _tar_bytes(files: list[Path], root: Path, header: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [(PACK_MEMBER, json.dumps(header).encode())] + \
                          [(p.relative_to(root).as_posix(), p.read_bytes()) for p in files]:
            info = tarfile.TarInfo(name)  # a plain file entry whatever the source was: never a link
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_parts(units: list[list[Path]], root: Path, out: Path, part_bytes: int,
               max_parts: int = MAX_PARTS) -> list[Path]:
    """Write `units` (files under `root`) as out/zoo-part<i>.tar.gz, each written atomically; parts of an
    earlier pack in `out` are then removed, and each part names its pack, so `unpack` never mixes two."""
    from csae_core.checkpoint import atomic_write_bytes, writable_dir

    if not 1 <= max_parts <= 10_000:
        raise _error(f"--max-parts must be at least 1, got {max_parts}")
    if not units:
        raise _error("nothing to pack (no finished checkpoint with its evaluation, no resume state); the parts "
                     "already in the folder are left as they are.")
    out = writable_dir(out)
    root = Path(root).resolve()
    groups, left = _group(units, part_bytes, max_parts)
    pack = uuid.uuid4().hex[:12]
    written = []
    for i, group in enumerate(groups):
        data = _tar_bytes(group, root, {"pack": pack, "part": i, "parts": len(groups)})
        path = out / f"zoo-part{i}.tar.gz"
        atomic_write_bytes(path, data)
        written.append(path)
        print(f"{path.name}: {len(group)} files, {len(data) / 2**20:.1f} MiB (pack {pack})")
    for old in out.glob("zoo-part*"):
        if old not in written:
            old.unlink()
    for unit in left:
        print(f"LEFT OUT (over {max_parts} parts of {part_bytes / 2**20:.0f} MiB): "
              f"{', '.join(str(p.relative_to(root)) for p in unit)}")
    return written


# -------------------------------------------------------------------------------------------- unpacking

def _check_member(m: tarfile.TarInfo, part: Path) -> None:
    p = PurePosixPath(m.name)
    where = f"{part.name}: member {m.name!r}"
    if p.is_absolute() or ".." in p.parts or "." in p.parts or "\\" in m.name:
        raise _error(f"{where} has an absolute or '..' path; nothing was unpacked. Fix: use parts made by "
                     f"`zoo.py pack`.")
    if not m.isreg():
        raise _error(f"{where} is not a regular file (a link, folder or device); nothing was unpacked.")
    if m.name != PACK_MEMBER and not ALLOWED.fullmatch(m.name):
        raise _error(f"{where} is not a checkpoint, evaluation, loan report or run state; nothing was unpacked.")
    if m.size > MAX_MEMBER_BYTES:
        raise _error(f"{where} is {m.size:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte limit; nothing unpacked.")


def read_parts(parts: list[Path]) -> dict[str, bytes]:
    """Every member of every part, checked (paths, types, sizes, one pack) before anything is written."""
    files: dict[str, bytes] = {}
    packs: dict[str, str] = {}
    total = 0
    for part in map(Path, parts):
        if not _regular(part) or part.stat().st_size > 4 * 2**30:
            raise _error(f"{part} is not a regular file (or is a link); nothing was unpacked.")
        try:
            with tarfile.open(part, "r:gz") as tar:
                for m in tar:
                    _check_member(m, part)
                    total += m.size
                    if total > MAX_UNPACK_BYTES:
                        raise _error(f"{part.name}: the parts hold over {MAX_UNPACK_BYTES:,} bytes; nothing unpacked.")
                    data = tar.extractfile(m).read()
                    if m.name == PACK_MEMBER:
                        packs[str(part)] = str(json.loads(data).get("pack"))
                    else:
                        files[m.name] = data
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            raise _error(f"{part} is not a readable tar.gz part ({e}); nothing was unpacked.") from None
    if len(set(packs.values())) > 1:
        raise _error(f"the parts come from {len(set(packs.values()))} different packs "
                     f"({', '.join(f'{k}: {v}' for k, v in sorted(packs.items()))}); nothing was unpacked. "
                     f"Fix: unpack the parts of one pack only (the newest).")
    return files


def _write_order(name: str) -> tuple:
    # Weights before the JSON that names them; a run's resume state last (it is what a resume trusts).
    return (name.endswith("train_state.safetensors"), name.endswith(".json"), name)


def unpack_parts(zoo, parts: list[Path]) -> list[str]:
    """Check every part, then write its files under the zoo's root, each atomically."""
    from csae_core.checkpoint import atomic_write_bytes

    files = read_parts(parts)
    root = Path(zoo.ROOT).resolve()
    for name in files:
        dest = root / name
        for up in [dest, *dest.parents]:
            if up == root:
                break
            if up.is_symlink() or (up.exists() and up != dest and not up.is_dir()):
                raise _error(f"{up} is a link or not a folder; nothing was unpacked. Fix: remove it first.")
    for name in sorted(files, key=_write_order):
        atomic_write_bytes(root / name, files[name])
    models = sorted(n for n in files if n.startswith("checkpoints/") and n.endswith(".json"))
    states = sorted(n for n in files if n.endswith("train_state.safetensors"))
    print(f"unpacked {len(files)} files: {len(models)} checkpoint(s) into checkpoints/, {len(states)} resume "
          f"state(s) into runs/" + "".join(f"\n  {n}" for n in models + states))
    return sorted(files)


# ---------------------------------------------------------------------------------------------- the bundle

def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _copy_code(dest: Path) -> None:
    for pattern in CODE:
        found = sorted(CODE_ROOT.glob(pattern))
        if not found:
            raise _error(f"{CODE_ROOT / pattern} is missing: the bundle needs it. Fix: run from a full checkout.")
        for src in found:
            _copy(src, dest / src.relative_to(CODE_ROOT))
    _copy(HERE / "bundle_run.sh", dest / "run.sh")
    (dest / "run.sh").chmod(0o755)


def _copy_data(dest: Path, datasets) -> None:
    from csae_core.datasets import find_dataset_dir, fix_hint, spec_of

    for ds in sorted(datasets):
        spec = spec_of(ds)
        folder = find_dataset_dir(ds)
        if folder is None:
            raise _error(f"{spec.title} is needed for the bundle but was not found. {fix_hint(spec)}")
        for f in spec.required_files:
            _copy(folder / f, dest / "data" / spec.folder / f)


def _download_wheels(dest: Path) -> None:
    """The target's wheels from an index (Python 3.12, x86-64 Linux), when one is reachable."""
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *WHEELS]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        r = subprocess.CompletedProcess(cmd, 1, "", str(e))
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise _error(f"no --wheels folder given and `pip download` failed ({last}). Fix: pass --wheels DIR "
                     f"holding {', '.join(WHEELS)} for cp312 (here: ../shared/wheels-py312).")


def _copy_wheels(dest: Path, wheels: Path | None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if wheels is None:
        _download_wheels(dest)
    else:
        for whl in sorted(Path(wheels).glob("*.whl")):
            _copy(whl, dest / whl.name)
    have = " ".join(p.name.lower() for p in dest.glob("*.whl"))
    missing = [w for w in WHEELS if w.split("==")[0].lower().replace("-", "_") + "-" not in have]
    if missing:
        raise _error(f"the wheels folder {wheels or '(pip download)'} lacks {', '.join(missing)}. "
                     f"Fix: pass --wheels DIR with them (cp312 manylinux for PyWavelets).")


def _copy_states(zoo, dest: Path, recipe: str, todo, room: int) -> list[str]:
    """Resume states of the planned models, in the zoo's order, while they fit in `room` bytes."""
    carried = []
    for ds, model, beta, seed in todo:
        run_dir = zoo.ROOT / "runs" / "zoo" / recipe / ds / zoo.name_of(model, beta, seed)
        if not _regular(run_dir / "train_state.safetensors"):
            continue
        unit = run_unit(run_dir)
        n = sum(p.stat().st_size for p in unit)
        if n > room:
            print(f"not carried (over the budget; it restarts): {run_dir.relative_to(zoo.ROOT)}")
            continue
        for p in unit:
            _copy(p, dest / p.relative_to(zoo.ROOT))
        room -= n
        carried.append(f"{ds}/{zoo.name_of(model, beta, seed)}")
    return carried


def make_bundle(zoo, out: Path, recipe: str, wheels: Path | None = None, budget_mib: float = 60,
                datasets=None, only=None, force: bool = False) -> Path:
    """The self-contained folder `out` (see the module doc); refused if it would exceed `budget_mib`."""
    if not 0 < budget_mib < 2**20:  # NaN too
        raise _error(f"--budget-mib must be a positive number of MiB, got {budget_mib}")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _error(f"{out} already exists and is not an empty folder. Fix: remove it or pick another --out.")
    todo = zoo.plan(recipe, datasets or zoo.DATASETS, force, only)
    if not todo:
        raise _error(f"nothing to train: every model asked for is shipped with recipe {recipe!r}. Fix: --force.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        _copy_code(tmp)
        _copy_data(tmp, {ds for ds, *_ in todo})
        _copy_wheels(tmp / "wheels", wheels)
        budget = int(budget_mib * 2**20)
        carried = _copy_states(zoo, tmp, recipe, todo, budget - _tree_bytes(tmp) - 2**16)
        info = {"recipe": recipe, "jobs": [list(j) for j in todo], "resumed": carried, "created": time.time()}
        (tmp / "BUNDLE.json").write_text(json.dumps(info, indent=1) + "\n")
        size = _tree_bytes(tmp)
        if size > budget:
            raise _error(f"the bundle would be {size / 2**20:.1f} MiB, over the {budget_mib:g} MiB budget. "
                         f"Fix: --datasets/--only fewer models, or a larger --budget-mib if the target allows.")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    parts = {p.name: _tree_bytes(out / p.name) if p.is_dir() else p.stat().st_size for p in out.iterdir()}
    print(f"bundle {out}: {size / 2**20:.1f} MiB (budget {budget_mib:g}); {len(todo)} model(s) of recipe "
          f"{recipe!r}, {len(carried)} resumed; " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(parts.items())))
    return out


# ------------------------------------------------------------------------------ run.sh's steps, in the bundle

def install(root: Path) -> None:
    """Each wheel into root/site with pip (--no-index --no-deps --target; never -e). A wheel this Python
    cannot take (cp312 PyWavelets under another Python) is skipped when its module is importable already."""
    import importlib.util

    target = root / "site"
    target.mkdir(exist_ok=True)
    modules = {w.split("==")[0].lower().replace("-", "_"): m for w, m in WHEELS.items()}
    for whl in sorted((root / "wheels").glob("*.whl")):
        module = modules.get(whl.name.split("-")[0].lower(), whl.name.split("-")[0])
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--upgrade", "--target", str(target), str(whl)], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"installed {whl.name} into site/")
            continue
        spec = importlib.util.find_spec(module)
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        if spec is None:
            raise _error(f"cannot install {whl.name} ({why}) and {module} is not importable. Fix: bundle the "
                         f"wheel built for this Python ({sys.version.split()[0]}).")
        print(f"skipped {whl.name} ({why}); {module} is importable already from {spec.origin}")
    check = subprocess.run([sys.executable, "-c", "import pytorch_wavelets, torch, csae_core.train as t; "
                            "print('csae_core from', t.__file__, '| torch', torch.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise _error(f"after the install, the imports fail: {(check.stderr.strip().splitlines() or ['?'])[-1]}")
    print(check.stdout.strip())


def _step_seconds(kind: str, settings: dict, device, mode: str, steps: int) -> tuple[float, float | None]:
    """Seconds per training step of `kind` at the recipe's batch on random data (the step train() runs),
    and the fraction of that time the GPU spends in kernels (None on the CPU)."""
    import torch

    from csae_core.fast_step import fast_net
    from csae_core.model import ModelConfig, build_model
    from csae_core.pedcc import generate_pedcc
    from csae_core.train import TrainConfig, _make_optimizer

    cfg = TrainConfig(**{k: v for k, v in settings.items() if k != "snapshots"})
    mcfg = ModelConfig(kind=kind, beta=0.02)
    model = build_model(mcfg, generate_pedcc(mcfg.num_classes, mcfg.latent_dim).scaled())
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt, net = _make_optimizer(cfg, model.parameters()), fast_net(model, mode, device)
    x = torch.rand(cfg.batch_size, 1, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, mcfg.num_classes, (cfg.batch_size,), device=device)
    cuda = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = net(x, y)
            losses = model.loss(out, x, y)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1e9)
        opt.step()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):  # warm-up: cuDNN's choice, the graph capture
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    if not cuda:
        return seconds, None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    kernel_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
                    for e in prof.key_averages())
    return seconds, min(1.0, kernel_us / 1e6 / steps / seconds)


def throughput(zoo, device: str, compile: str, loan: Path) -> dict:
    """Images/s per model kind of the bundle's recipe (printed, and kept in the loan report), the estimated
    time of each model, the GPU's busy fraction per kind (which train_until packs jobs by), and the compile
    mode per kind training will use ("auto": on CUDA, eager or Inductor for the first kind (CSAE), whichever
    is faster; eager for the others)."""
    import torch

    info = json.loads((zoo.ROOT / "BUNDLE.json").read_text())
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    kinds = list(dict.fromkeys(j[1] for j in info["jobs"]))
    steps = 20 if dev.type == "cuda" else 2
    figures, report = {}, {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                           "torch": torch.__version__, "recipe": info["recipe"], "started": time.time()}
    for kind in kinds:
        settings = {**zoo.settings_for(info["recipe"], kind), "device": dev.type}
        # auto: eager, and for the first kind (CSAE, the zoo's bulk) Inductor too. Plain CUDA-graph replay is
        # not tried: on the H200 (loan of 2026-11-30) it ran the CSAE step in 86 ms against eager's 41 ms.
        modes = [compile] if compile != "auto" else ["none"] + (["compile"] if dev.type == "cuda"
                                                                and kind == kinds[0] else [])
        for mode in modes:
            try:
                sec, busy = _step_seconds(kind, settings, dev, mode, steps)
            except Exception as e:  # a mode that fails here is not used for training
                print(f"throughput {kind} {mode}: failed ({type(e).__name__}: {str(e)[:200]})", flush=True)
                continue
            n = settings["epoch_images"] or 60000
            est = settings["epochs"] * -(-n // settings["batch_size"]) * sec
            figures.setdefault(kind, {})[mode] = {"step_s": round(sec, 5), "batch": settings["batch_size"],
                                                  "images_per_s": round(settings["batch_size"] / sec, 1),
                                                  "gpu_busy": None if busy is None else round(busy, 3),
                                                  "model_s": round(est, 1)}
            print(f"throughput {kind:13s} {mode:9s} {settings['batch_size'] / sec:10.0f} images/s  "
                  f"step {sec * 1e3:7.1f} ms  GPU busy {'-' if busy is None else f'{busy:.0%}'}  "
                  f"~{est:.0f} s per model (optimizer steps only)", flush=True)
    # auto: the faster of what was measured per kind (eager for kinds measured eagerly only)
    choice = {k: compile if compile != "auto" else min(f, key=lambda m: f[m]["step_s"]) for k, f in figures.items()}
    report.update(throughput=figures, compile=choice)
    _write_json(loan, report)
    print(f"training will use compile modes {choice}")
    return report


def _write_json(path: Path, data: dict) -> None:
    from csae_core.checkpoint import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def _train_job(job: tuple, kw: dict) -> str:
    """One model (in a worker process too). A failure with a compile mode is retried eagerly (it resumes from
    the last saved epoch); any other failure is reported, so one model does not end the loan."""
    import zoo

    tag = f"{job[0]}/{zoo.name_of(*job[1:])}"
    try:
        return zoo.train_one(*job, **kw)
    except Exception as e:
        if kw.get("compile", "none") == "none":
            return f"{tag}: FAILED: {type(e).__name__}: {e}"
        print(f"{tag}: failed with compile={kw['compile']} ({type(e).__name__}: {e}); again without", flush=True)
    try:
        return zoo.train_one(*job, **{**kw, "compile": "none"})
    except Exception as e:
        return f"{tag}: FAILED: {type(e).__name__}: {e}"


def gpu_share(report: dict, kind: str) -> float:
    """The fraction of the GPU one `kind` job keeps busy (throughput step; 1.0 when unmeasured)."""
    figures = (report.get("throughput") or {}).get(kind) or {}
    mode = (report.get("compile") or {}).get(kind, "none")
    busy = (figures.get(mode) or {}).get("gpu_busy")
    return min(1.0, max(0.05, busy)) if busy else 1.0


def admit(running_shares: list[float], share: float, jobs: int) -> bool:
    """Whether a job of `share` starts beside `running_shares`: with `jobs` > 0, up to that many at once; with
    0 (auto), while the shares sum to at most 1. On the H200 a CSAE job keeps the GPU 97 % busy, so two
    CSAE side by side would each take twice as long and neither might finish in the loan; Basenet and
    CSAE_encoder keep it 42 % busy, so two of them share it well."""
    if not running_shares:
        return True
    return len(running_shares) < jobs if jobs > 0 else sum(running_shares) + share <= 1.0 + 1e-9


def train_until(zoo, stop_at: float, device: str, jobs: int, compile: str, loan: Path) -> list[str]:
    """The bundle's jobs in the zoo's order, several at once as `admit` allows (`jobs` 0: by GPU share). No
    model or epoch starts after `stop_at` (a running model stops after its epoch, its resume state kept),
    except that each loan's first model always starts."""
    import concurrent.futures as cf
    import multiprocessing as mp

    info = json.loads((zoo.ROOT / "BUNDLE.json").read_text())
    report = zoo._json(loan) or {}
    modes = report.get("compile") if compile == "auto" else None  # per kind, from the throughput step
    most = jobs if jobs > 0 else 4 if device == "cuda" else 1  # processes at most (auto on a GPU: by share, up to 4)
    kw = dict(recipe=info["recipe"], device=device, root=str(zoo.ROOT), stop_at=stop_at,
              threads=max(1, (os.cpu_count() or 1) // most) if most > 1 else 0)
    mode_of = lambda job: (modes or {}).get(job[1], "none") if compile == "auto" else compile
    share = lambda job: gpu_share(report, job[1]) if device == "cuda" else 1.0
    results: list[str] = []
    # Sequentially in this process, or in processes that share the GPU (their launches overlap).
    pool = cf.ProcessPoolExecutor(most, mp_context=mp.get_context("spawn")) if most > 1 else None
    queue, running = [tuple(j) for j in info["jobs"]], {}
    try:
        while queue or running:
            while (queue and len(running) < most and admit([share(j) for j in running.values()], share(queue[0]), jobs)
                   and (not running and not results or time.time() < stop_at)):
                job = queue.pop(0)
                args = (job, {**kw, "compile": mode_of(job)})
                running[pool.submit(_train_job, *args) if pool else _done_now(_train_job(*args))] = job
            if not running:
                break
            for fut in cf.wait(running, return_when=cf.FIRST_COMPLETED)[0]:
                running.pop(fut)
                results.append(fut.result())
                print(results[-1], flush=True)
                _write_json(loan, {**report, "results": results, "ended": time.time()})
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return results


def _done_now(value) -> "cf.Future":
    import concurrent.futures as cf

    fut = cf.Future()
    fut.set_result(value)
    return fut


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python checkpoints/bundle.py", description="run.sh's steps in a bundle")
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("install", help="the bundle's wheels into site/ (offline, --target)")
    for name in ("throughput", "train"):
        s = sub.add_parser(name)
        s.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        s.add_argument("--compile", choices=("auto", "none", "compile", "cudagraph"), default="auto")
        s.add_argument("--loan", type=Path, required=True, help="the loan's report (JSON)")
    t = sub.choices["train"]
    t.add_argument("--stop-at", type=float, required=True, help="UNIX time after which no epoch starts")
    t.add_argument("--jobs", type=int, default=0, help="models at once (0: as many as the GPU's busy fractions allow)")
    a = p.parse_args(argv)
    if a.step == "install":  # before `import zoo`: csae_core needs the wheels this step installs
        install(Path(__file__).resolve().parent.parent)
        return
    import zoo  # beside this file (run as a script, its folder is on sys.path)

    from csae_core.errors import CSAEError
    try:
        if a.step == "install":
            install(zoo.ROOT)
        elif a.step == "throughput":
            throughput(zoo, a.device, a.compile, a.loan)
        else:
            train_until(zoo, a.stop_at, a.device, max(0, a.jobs), a.compile, a.loan)
    except CSAEError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
