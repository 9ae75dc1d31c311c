"""`python -m csae_core ...`: pedcc, data, train, evaluate, sample, reconstruct, export, openset.

Library errors (CSAEError) become one line on stderr and exit code 2, never a traceback; so do usage
errors and any unexpected exception (CSAE_DEBUG=1 prints the latter's traceback, to keep bugs diagnosable).
The train flags are generated from the fields of TrainConfig and ModelConfig (`add_config_flags`):
every field is settable and its default lives only in the dataclass. Only the commands that need
torch import it, and only once their arguments are checked: `pedcc` starts in numpy alone, and a refused
input costs no torch import (a few tens of MB, not ~230).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import os
import re
import sys
import time
import traceback
import types
import typing
from pathlib import Path

from .errors import CSAEError


def _save_png(array, path: str) -> None:
    from PIL import Image

    from .checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def cmd_pedcc(a) -> None:
    from .pedcc import generate_pedcc, pedcc_metrics

    if a.iters is not None and a.converge:
        raise CSAEError("give either --iters Q (the paper's fixed count) or --converge, not both")
    res = generate_pedcc(a.classes, a.dim, seed=a.seed, iters=a.iters, converge=a.converge,
                         as_numpy=not a.out)  # numpy only, unless the safetensors writer needs tensors
    m = pedcc_metrics(res.centroids)
    record = {"classes": a.classes, "dim": a.dim, "seed": a.seed, "iterations": res.iterations,
              "converged": res.converged, "seconds": round(res.seconds, 4), **{k: v for k, v in m.items()
                                                                               if k not in ("classes", "dim")}}
    if a.out:
        from .checkpoint import save_tensors
        save_tensors(a.out, {"centroids": res.scaled(), "unit": res.centroids}, metadata=record)
        record["out"] = a.out
    if a.json:
        print(json.dumps(record))
    else:
        for k, v in record.items():
            print(f"{k:>20}: {v}")


def cmd_data(a) -> None:
    from . import data

    if a.action == "check":
        rows = data.check_datasets(a.data_dir)
        for r in rows:
            status = "ok " if r["ok"] else "BAD"
            print(f"{status} {r['dataset']:<15} {r['split']:<14} {r.get('images') or 0:>6} images  {r['path']}")
            if r.get("problem"):
                print(f"    {r['problem']}")
        if not any(r["ok"] for r in rows):
            raise CSAEError("no usable dataset found (see above)")
        bad = [f"{r['dataset']} {r['split']}" for r in rows if not r["ok"]]
        if bad:
            raise CSAEError(f"{len(bad)} dataset file(s) are BAD or missing ({', '.join(bad)}; see above). "
                            f"Fix: python -m csae_core data download <name>.")
        return
    names = [a.name] if a.name else list(data.DATASETS)
    for name in names:
        if name not in data.DATASETS:
            raise CSAEError(f"unknown dataset {name!r}: choose from {', '.join(data.DATASETS)}")
        progress, close = data.tqdm_progress(name)
        try:
            path = data.download_dataset(name, a.data_dir, progress=progress)
        finally:
            close()  # before an error is printed: the message starts its own line
        print(f"{name}: verified files in {path}")


# ---------------------------------------------------------------- flags from the config dataclasses

# Flag spellings that predate the generated flags (the README, checkpoints/zoo.py and scripts use them).
FLAG_NAMES = {"kind": "--model", "snapshots": "--snapshot"}
# ModelConfig fields that train() takes from the data; a flag for them would be overridden.
FROM_DATA = ("in_channels", "image_size", "num_classes")
HELP = {"out": "run folder (default: runs/<dataset>-<model>-b<beta>)"}


def _field_comments(cls) -> dict[str, str]:
    """{field: the one-line comment after its default} from the source of dataclass `cls`: the flags' help."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return dict(re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.+)$", source, flags=re.M))


def _flag_type(hint):
    """The argparse type for a field annotation: Optional[X] -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [h for h in typing.get_args(hint) if h is not type(None)]
        hint = rest[0] if len(rest) == 1 else str
    return hint


def add_config_flags(parser: argparse.ArgumentParser, cls, prefix: str, skip=(), choices=None) -> None:
    """One flag per field of dataclass `cls`: --field-name (or FLAG_NAMES), typed from the annotation;
    bools get --x/--no-x, tuples take several values (a repeated flag adds more). Nothing is stored
    for a flag not given, so the dataclass's own default applies (`config_from`)."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = HELP.get(f.name) or " ".join(x for x in (comments.get(f.name), f"(default: {default!r})") if x)
        kw = dict(dest=f"{prefix}.{f.name}", default=argparse.SUPPRESS, required=required,
                  help=text.replace("%", "%%"))  # argparse formats help with %
        hint = _flag_type(hints[f.name])
        if hint is not bool and not (choices and f.name in choices):
            kw["metavar"] = f.name.upper()
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif hint is tuple or typing.get_origin(hint) is tuple:
            element = (typing.get_args(hint) or (type(default[0]) if default else int,))[0]
            kw.update(nargs="+", action="extend", type=element)
        elif typing.get_origin(hint) is typing.Literal:
            kw.update(choices=typing.get_args(hint), type=type(typing.get_args(hint)[0]))
        else:
            kw["type"] = hint
        if choices and f.name in choices:
            kw["choices"] = choices[f.name]
        parser.add_argument(FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-")), **kw)


def config_from(cls, args: argparse.Namespace, prefix: str, **extra):
    """An instance of `cls` from the flags given under `prefix` (and `extra`); the rest keep their defaults."""
    given = {k.split(".", 1)[1]: tuple(v) if isinstance(v, list) else v
             for k, v in vars(args).items() if k.startswith(prefix + ".")}
    return cls(**{**given, **extra})


def train_configs(a: argparse.Namespace):
    """(TrainConfig, ModelConfig) from parsed train flags."""
    from .model import ModelConfig
    from .train_config import TrainConfig

    tcfg = config_from(TrainConfig, a, "train")
    mcfg = config_from(ModelConfig, a, "model", **({"image_size": tcfg.image_size} if tcfg.image_size else {}))
    if not vars(a).get("train.out"):
        tcfg = dataclasses.replace(tcfg, out=f"runs/{Path(tcfg.dataset).name}-{mcfg.kind}-b{mcfg.beta:g}")
    return tcfg, mcfg


def cmd_train(a) -> None:
    tcfg, mcfg = train_configs(a)  # a refused setting costs no torch import: train's is below
    from .datasets import DATASETS, split_paths

    if tcfg.dataset in DATASETS:  # nor does a dataset that is not there (torch-free check, the same message)
        split_paths(tcfg.dataset, "train", tcfg.data_dir)
    from .train import train

    try:
        stem = train(tcfg, mcfg, resume=a.resume, progress=not a.no_progress)
    except KeyboardInterrupt:
        state = Path(tcfg.out) / "train_state.safetensors"
        print(f"interrupted: the last completed epoch's checkpoint in {tcfg.out} is intact (continue with --resume)"
              if state.is_file() else "interrupted before the first epoch was saved: no checkpoint was written",
              file=sys.stderr)
        sys.exit(130)
    print(json.dumps({"event": "done", "checkpoint": str(stem) + ".json"}), flush=True)


def _dumps(record) -> str:
    """JSON with NaN/inf as null: a diverged model's infinite outputs must not print non-standard `Infinity`."""
    def clean(v):
        if isinstance(v, float):
            return v if v == v and abs(v) != float("inf") else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(record), allow_nan=False)


def _check_limit(limit: int) -> None:
    if not 0 <= limit <= 10**9:
        raise CSAEError(f"--limit must be 0 (all images) or a positive count, got {limit}")


def cmd_evaluate(a) -> None:
    from .checkpoint import load_checkpoint

    _check_limit(a.limit)
    ckpt = load_checkpoint(a.checkpoint)  # an oversized config is refused here, before torch is imported
    from .evaluate import decoder_collapsed, evaluate_checkpoint, test_split

    split = test_split(ckpt.meta.get("dataset", "mnist"), a.data_dir, ckpt.config.image_size)
    t0 = time.perf_counter()
    m = evaluate_checkpoint(ckpt, limit=a.limit, split=split)
    m["seconds"] = round(time.perf_counter() - t0, 2)
    if a.json:
        print(_dumps(m))
        return
    print(f"{m['model']} beta={m['beta']:g} epoch {m['epoch']} on {m['dataset']}: {m['test_images']} test images")
    print(f"accuracy {m['accuracy'] * 100:.2f}%")
    if m["recon_mse"] is not None:
        print(f"reconstruction MSE {m['recon_mse']:.5f}, PSNR {m['psnr']:.2f} dB "
              f"(a flat grey image: {m['flat_mse']:.5f}{'; the decoder has collapsed' if decoder_collapsed(m) else ''})")
    width = max(len(c) for c in m["class_names"])
    for name, acc in zip(m["class_names"], m["per_class_accuracy"]):
        print(f"  {name:>{width}}: {acc * 100:6.2f}%")
    print("confusion (rows: true, columns: predicted)")
    for row in m["confusion"]:
        print("  " + " ".join(f"{v:5d}" for v in row))
    print("distances between learned class latent means")
    for row in m["latent_mean_distances"]:
        print("  " + " ".join(f"{v:6.2f}" for v in row))


MAX_SAMPLES = 1000  # samples per class in one grid


def cmd_sample(a) -> None:
    from .checkpoint import load_checkpoint

    if not 1 <= a.n <= MAX_SAMPLES:
        raise CSAEError(f"--n must be in 1..{MAX_SAMPLES}, got {a.n}")
    if not 0 <= a.temperature <= 100:  # NaN and inf fail too
        raise CSAEError(f"--temperature must be a number in [0, 100], got {a.temperature}")
    ckpt = load_checkpoint(a.checkpoint)  # a missing or oversized checkpoint is refused before torch is imported
    from .images import to_grid
    from .sample import sample_images

    classes = [a.cls] if a.cls is not None else list(range(ckpt.config.num_classes))
    images, _ = sample_images(ckpt.model, classes, a.n, ckpt.latent_stats(), a.temperature, a.seed)
    _save_png(to_grid(images, nrow=a.n), a.out)
    print(f"wrote {len(images)} samples ({len(classes)} classes x {a.n}) to {a.out}")


def cmd_reconstruct(a) -> None:
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(a.checkpoint)
    import torch

    from .images import decode_image, preprocess_letter, to_grid
    from .preprocess import to_model_input

    if ckpt.config.in_channels != 1:
        raise CSAEError("reconstruct takes handwriting-style images; this model expects colour input")
    pictures = [preprocess_letter(decode_image(p), str(p))[-1][1] for p in a.images]
    x = to_model_input(pictures, ckpt.config.image_size)
    recon = ckpt.model.reconstruct(x).float().clamp(0, 1)
    _save_png(to_grid(torch.cat([x, recon]), nrow=len(pictures)), a.out)
    print(f"wrote {len(pictures)} inputs (top row) and reconstructions (bottom row) to {a.out}")


def cmd_export(a) -> None:
    from .checkpoint import export_checkpoint

    out = Path(a.out)
    stem = export_checkpoint(a.checkpoint, out.with_suffix("") if out.suffix in (".json", ".safetensors") else out,
                             half=a.half)
    print(f"wrote {stem}.safetensors and {stem}.json")


MAX_THREADS = 1024  # torch aborts (a segfault) asked for 100,000 threads


def cmd_openset(a) -> None:
    if not 0 <= a.threads <= MAX_THREADS:
        raise CSAEError(f"--threads must be 0 (automatic) or 1..{MAX_THREADS}, got {a.threads}")
    _check_limit(a.limit)
    from .checkpoint import load_checkpoint

    t0 = time.perf_counter()
    ckpt = load_checkpoint(a.checkpoint)
    import torch

    from . import openset

    # On a machine already busy, OpenMP threads mostly wait for each other: one thread scored 3,000 images
    # in 14.5 s where two took 25 s (2 cores, load average 8). Auto: one thread when the load is >= the cores.
    threads = a.threads or (1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else 0)
    if threads:
        torch.set_num_threads(threads)
    model = ckpt.model.to(memory_format=torch.channels_last)  # oneDNN's faster conv layout
    known_name = ckpt.meta.get("dataset")
    if a.unknown not in openset.UNKNOWN_SETS:
        raise CSAEError(f"unknown dataset {a.unknown!r}: choose from {', '.join(openset.UNKNOWN_SETS)}")
    if openset.UNKNOWN_SETS[a.unknown][0] == known_name:
        raise CSAEError(f"--unknown {a.unknown} is the dataset this model was trained on; choose another of "
                        f"{', '.join(n for n in openset.UNKNOWN_SETS if openset.UNKNOWN_SETS[n][0] != known_name)}")
    names = openset.available_scores(model) if a.score == "all" else [a.score or openset.default_score(model)]
    openset.check_scores(model, names)  # before any data is read
    known = openset.load_known(known_name, ckpt.config.image_size, a.data_dir, a.limit)
    images, labels = openset.load_unknown(a.unknown, ckpt.config.image_size, a.data_dir, a.limit)
    if not len(labels):  # e.g. a copy holding only i and l, asked without them: say so, not "got 200 and 0"
        dataset = openset.UNKNOWN_SETS[a.unknown][0]
        raise CSAEError(f"--unknown {a.unknown}: {openset.unknown_title(a.unknown)} has no image in the {dataset} "
                        f"files found. Fix: python -m csae_core data download {dataset}, or choose another --unknown.")
    res = openset.evaluate_openset(model, known, images, labels, names)
    record = {**res.metrics(names[0]), "checkpoint": str(ckpt.path) + ".json", "dataset": known_name,
              "unknown": a.unknown, "model": ckpt.config.kind, "beta": ckpt.config.beta,
              "scores": {n: res.metrics(n) for n in names},
              # A subset with no image (a set of only i/l letters has nothing left without them) is left out.
              "subsets": {sub: {n: res.metrics(n, mask) for n in names}
                          for sub, mask in openset.unknown_subsets(a.unknown, res.unknown_labels).items()
                          if mask.any()},
              "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0, 2)}
    if a.json:
        print(_dumps(record))
        return
    print(f"{record['model']} beta={record['beta']:g} ({known_name}) against {a.unknown}: {record['known_images']} "
          f"known test, {record['unknown_images']} unknown images; threshold from {record['threshold_images']} "
          f"images of the threshold half; {record['seconds']:.1f} s")
    for title, block in [("", record["scores"])] + [(f" ({k})", v) for k, v in record["subsets"].items()]:
        for n, m in block.items():
            print(f"  {n + title:<32} AUROC {m['auroc']:.4f}  AUPR {m['aupr']:.4f}  FPR@95 {m['fpr_at_95_tpr']:.4f}"
                  f"  threshold {m['threshold_at_95_tpr']:.4g} (keeps {m['known_accepted']:.3f} of known test)")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the problem and where the usage is), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The CLI. Building and parsing it import no torch (the train flags come from torch-free dataclasses)."""
    p = OneLineParser(prog="python -m csae_core", description="CSAE with PEDCC: the paper as a library.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("pedcc", help="generate predefined evenly-distributed class centroids")
    s.add_argument("--classes", type=int, required=True)
    s.add_argument("--dim", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--iters", type=int, help="the paper's fixed iteration count")
    s.add_argument("--converge", action="store_true", help="iterate until the configuration stops improving")
    s.add_argument("--out", help="write centroids (scaled by sqrt(d)) and unit vectors as safetensors")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_pedcc)

    s = sub.add_parser("data", help="download or check datasets")
    s.add_argument("action", choices=("download", "check"))
    s.add_argument("name", nargs="?", help="mnist, fashion-mnist or emnist-letters (default: all)")
    s.add_argument("--data-dir")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train a model with the paper's recipe")
    from .model import MODEL_KINDS, ModelConfig
    from .train_config import TrainConfig

    add_config_flags(s, TrainConfig, "train")
    add_config_flags(s, ModelConfig, "model", skip=FROM_DATA, choices={"kind": MODEL_KINDS})
    s.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

    _add_checkpoint_commands(sub)
    return p


def _add_checkpoint_commands(sub) -> None:
    """The commands that take a checkpoint: evaluate, sample, reconstruct, export, openset."""
    s = sub.add_parser("evaluate", help="test-set accuracy, confusion, reconstruction error, latent distances")
    s.add_argument("checkpoint")
    s.add_argument("--data-dir")
    s.add_argument("--limit", type=int, default=0, help="only the first N test images")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="decode samples of each class's latent Gaussian (section 4.2)")
    s.add_argument("checkpoint")
    s.add_argument("--class", dest="cls", type=int)
    s.add_argument("--n", type=int, default=10)
    s.add_argument("--temperature", type=float, default=1.0, help="scales the covariance")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("reconstruct", help="reconstruct your own handwriting images (EMNIST-style preprocessing)")
    s.add_argument("checkpoint")
    s.add_argument("images", nargs="+")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("export", help="copy a checkpoint, optionally with fp16 weights (compact shipping)")
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True)
    s.add_argument("--half", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("openset", help="open-set recognition: known test images against an unknown dataset")
    s.add_argument("checkpoint")
    s.add_argument("--unknown", required=True, help="emnist-letters, emnist-letters-no-ilosz, mnist or fashion-mnist")
    s.add_argument("--score", help="distance, combined, recon, elbo, msp, energy, or all (default: the model's first)")
    s.add_argument("--data-dir")
    s.add_argument("--limit", type=int, default=0, help="only an evenly spaced N images of each split: both known halves and the unknown set (0: all)")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: one on a busy machine, else all)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_openset)


DEBUG_VAR = "CSAE_DEBUG"  # set to 1 to see the traceback of an unexpected error


def run_with_one_line_errors(fn) -> int:
    """Run fn() under the CLI's contract (also `checkpoints/zoo.py`'s): a problem is one line on stderr and exit
    code 2, never a traceback ($CSAE_DEBUG=1 prints the traceback of an unexpected error)."""
    try:
        fn()
    except CSAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise  # argparse's usage errors (exit 2) and --help (exit 0)
    except BaseException as e:  # noqa: BLE001 - a bug or an unforeseen input: one line, never a traceback
        if os.environ.get(DEBUG_VAR, "").strip() not in ("", "0"):
            traceback.print_exc()
        text = " ".join(str(e).split())[:300]
        print(f"error: unexpected {type(e).__name__}{': ' + text if text else ''}. This is a bug in csae_core "
              f"or an input it does not yet check; run with {DEBUG_VAR}=1 to see where.", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(x) for x in argv]

    def run():
        args = build_parser().parse_args(argv)
        args.func(args)
    return run_with_one_line_errors(run)
