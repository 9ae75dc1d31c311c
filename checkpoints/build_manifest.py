"""Write checkpoints/manifest.json from the shipped checkpoints and their full-test-set evaluations.

    python checkpoints/build_manifest.py

Accuracy and reconstruction MSE come from `python -m csae_core evaluate --json` on the 10,000 test
images, saved by train_zoo.py under results/eval/<dataset>/<name>.json.
"""
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK_IMAGES = 300  # tests/test_zoo.py re-evaluates every checkpoint on these first test images


def quick_check(meta_path: Path) -> dict:
    """Accuracy on the first CHECK_IMAGES test images, recorded so CI can confirm each shipped file."""
    from csae_core.checkpoint import load_checkpoint
    from csae_core.evaluate import evaluate_model
    from csae_core.train import load_dataset_tensors

    ck = load_checkpoint(meta_path)
    _, (x, y), _ = load_dataset_tensors(ck.meta["dataset"])
    m = evaluate_model(ck.model, x[:CHECK_IMAGES], y[:CHECK_IMAGES])
    return {"test_images": CHECK_IMAGES, "accuracy": m["accuracy"], "recon_mse": m["recon_mse"]}


def main():
    entries = []
    for meta_path in sorted((ROOT / "checkpoints").glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "csae-checkpoint/1":
            continue
        weights = meta_path.parent / meta["weights"]
        ev_path = ROOT / "results" / "eval" / meta_path.parent.name / meta_path.name
        ev = json.loads(ev_path.read_text()) if ev_path.exists() else {}
        epochs = meta["train"]["epochs"]
        done = meta["history"][:meta["epoch"]]
        image_steps = sum(h.get("images") or meta["train"]["epoch_images"] for h in done)
        train_seconds = sum(h["seconds"] for h in done)  # optimizer steps only, not the per-epoch evaluation
        entries.append({
            "dataset": meta["dataset"], "model": meta["model"]["kind"], "beta": meta["model"]["beta"],
            "epoch": meta["epoch"], "epochs": epochs,
            "paper_epoch": round(meta["epoch"] * 120 / epochs),  # the point of the paper's 120-epoch run
            "recipe": meta["recipe"], "test_accuracy": ev.get("accuracy"), "recon_mse": ev.get("recon_mse"),
            "psnr": ev.get("psnr"), "test_images": ev.get("test_images"),
            "weights_dtype": meta["weights_dtype"],
            "image_steps": image_steps, "train_seconds": round(train_seconds, 1),
            "images_per_s": round(image_steps / train_seconds, 1), "hardware": meta.get("hardware"),
            "path": str(meta_path.relative_to(ROOT)),
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "bytes": weights.stat().st_size + meta_path.stat().st_size,
            "check": quick_check(meta_path),
        })
    out = ROOT / "checkpoints" / "manifest.json"
    out.write_text(json.dumps(entries, indent=1) + "\n")
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} checkpoints, {total / 2**20:.1f} MiB -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
