"""`python -m csae_core ...`: pedcc, data, train, evaluate, sample, reconstruct, export.

Library errors (CSAEError) become one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from .errors import CSAEError

MODEL_CHOICES = ("csae", "csae-encoder", "basenet", "cvae")


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
    res = generate_pedcc(a.classes, a.dim, seed=a.seed, iters=a.iters, converge=a.converge)
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
        from tqdm.auto import tqdm
        bar = tqdm(unit="B", unit_scale=True, desc=name)

        def progress(done, total, bar=bar):
            if total and bar.total != total:
                bar.reset(total=total)
            bar.n = done
            bar.refresh()

        path = data.download_dataset(name, a.data_dir, progress=progress)
        bar.close()
        print(f"{name}: verified files in {path}")


def cmd_train(a) -> None:
    from .model import ModelConfig
    from .train import TrainConfig, train

    mcfg = ModelConfig(kind=a.model, beta=a.beta, latent_dim=a.latent_dim, recon_loss=a.recon_loss,
                       widths=tuple(a.widths), image_size=a.image_size or 32)
    tcfg = TrainConfig(dataset=a.dataset, data_dir=a.data_dir,
                       out=a.out or f"runs/{Path(a.dataset).name}-{a.model}-b{a.beta:g}", epochs=a.epochs,
                       batch_size=a.batch_size, lr=a.lr, lr_step=a.lr_step, warmup_steps=a.warmup_steps, grad_clip=a.grad_clip,
                       epoch_images=a.epoch_images, stats_images=a.stats_images,
                       test_images=a.test_images, snapshots=tuple(a.snapshot), seed=a.seed,
                       pedcc_seed=a.pedcc_seed, device=a.device, recipe=a.recipe, image_size=a.image_size)
    try:
        stem = train(tcfg, mcfg, resume=a.resume, progress=not a.no_progress)
    except KeyboardInterrupt:
        state = Path(tcfg.out) / "train_state.safetensors"
        print(f"interrupted: the last completed epoch's checkpoint in {tcfg.out} is intact (continue with --resume)"
              if state.is_file() else "interrupted before the first epoch was saved: no checkpoint was written",
              file=sys.stderr)
        sys.exit(130)
    print(json.dumps({"event": "done", "checkpoint": str(stem) + ".json"}), flush=True)


def _test_split(ckpt, data_dir, limit):
    from .train import load_dataset_tensors

    name = ckpt.meta.get("dataset", "mnist")
    _, (x, y), _ = load_dataset_tensors(name, data_dir, ckpt.config.image_size)
    return (x[:limit], y[:limit]) if limit else (x, y)


def cmd_evaluate(a) -> None:
    from .checkpoint import load_checkpoint
    from .evaluate import decoder_collapsed, evaluate_model

    ckpt = load_checkpoint(a.checkpoint)
    x, y = _test_split(ckpt, a.data_dir, a.limit)
    t0 = time.perf_counter()
    m = evaluate_model(ckpt.model, x, y, class_names=ckpt.class_names)
    m.update(checkpoint=str(ckpt.path) + ".json", dataset=ckpt.meta.get("dataset"), model=ckpt.config.kind,
             beta=ckpt.config.beta, epoch=ckpt.meta.get("epoch"), seconds=round(time.perf_counter() - t0, 2))
    if a.json:
        print(json.dumps(m))
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


def cmd_sample(a) -> None:
    from .checkpoint import load_checkpoint
    from .images import to_grid
    from .sample import sample_images

    ckpt = load_checkpoint(a.checkpoint)
    classes = [a.cls] if a.cls is not None else list(range(ckpt.config.num_classes))
    images, _ = sample_images(ckpt.model, classes, a.n, ckpt.latent_stats(), a.temperature, a.seed)
    _save_png(to_grid(images, nrow=a.n), a.out)
    print(f"wrote {len(images)} samples ({len(classes)} classes x {a.n}) to {a.out}")


def cmd_reconstruct(a) -> None:
    import torch

    from .checkpoint import load_checkpoint
    from .images import decode_image, letter_tensor, preprocess_letter, to_grid

    ckpt = load_checkpoint(a.checkpoint)
    if ckpt.config.in_channels != 1:
        raise CSAEError("reconstruct takes handwriting-style images; this model expects colour input")
    pictures = [preprocess_letter(decode_image(p), str(p))[-1][1] for p in a.images]
    x = letter_tensor(pictures, ckpt.config.image_size)
    recon = ckpt.model.reconstruct(x).float().clamp(0, 1)
    _save_png(to_grid(torch.cat([x, recon]), nrow=len(pictures)), a.out)
    print(f"wrote {len(pictures)} inputs (top row) and reconstructions (bottom row) to {a.out}")


def cmd_export(a) -> None:
    from .checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(a.checkpoint)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "model", "weights", "weights_sha256",
                                                            "weights_dtype", "centroids")}
    out = Path(a.out)
    stem = save_checkpoint(out.with_suffix("") if out.suffix in (".json", ".safetensors") else out, ckpt.model,
                           meta, half=a.half)
    print(f"wrote {stem}.safetensors and {stem}.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m csae_core", description="CSAE with PEDCC: the paper as a library.")
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
    s.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, or a folder of class sub-folders")
    s.add_argument("--model", choices=MODEL_CHOICES, default="csae")
    s.add_argument("--beta", type=float, default=0.0, help="decoder-input noise factor (eq. 12)")
    s.add_argument("--epochs", type=int, default=120)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--lr", type=float, default=0.1)
    s.add_argument("--lr-step", type=float, default=30, help="divide the lr by 10 every this many epochs")
    s.add_argument("--warmup-steps", type=int, default=0, help="linear lr warm-up steps (0: none)")
    s.add_argument("--grad-clip", type=float, default=5.0, help="global gradient-norm clip (0: off)")
    s.add_argument("--stats-images", type=int, default=0, help="training images for class latent stats (0: all)")
    s.add_argument("--epoch-images", type=int, default=0, help="train on a fresh random subset of N images per epoch")
    s.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images per epoch")
    s.add_argument("--snapshot", type=int, action="append", default=[], help="also keep this epoch's checkpoint")
    s.add_argument("--latent-dim", type=int, default=40)
    s.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 128])
    s.add_argument("--image-size", type=int, default=0, help="0: 32 for MNIST-like data, 128 for image folders")
    s.add_argument("--recon-loss", choices=("wavelet", "mse"), default="wavelet")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pedcc-seed", type=int, default=0)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--recipe", default="paper", help="label recorded in the checkpoint, e.g. cpu-short")
    s.add_argument("--data-dir")
    s.add_argument("--out", help="run folder (default runs/<dataset>-<model>-b<beta>)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

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
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CSAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
