"""Does the CSAE decoder learn, or collapse to a flat image, at a given lr and batch size?

    python benchmarks/bench_decoder_lr.py [--lrs 0.1 0.03 0.01] [--batch-size 64] [--epochs 3]

Trains the Table 2 CSAE (beta 0.02, wavelet loss) on fresh 3,072-image MNIST subsets per epoch with a
constant lr, and prints per epoch the training Loss2 and, on the last 500 training images (the test set
is left alone: this chooses a training setting), the accuracy and reconstruction MSE beside the MSE of
the best flat image. This is why the cpu-short zoo recipe uses lr 0.03 at batch 64: the
paper's lr 0.1 was tuned by its authors at batch 4096, and at batch 64 it kills the decoder.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from csae_core.checkpoint import load_checkpoint
from csae_core.errors import CSAEError
from csae_core.evaluate import decoder_collapsed, evaluate_model
from csae_core.model import ModelConfig
from csae_core.preprocess import load_dataset_tensors
from csae_core.train import TrainConfig, train


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.03, 0.01])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-images", type=int, default=3072)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    (x, y), _, _ = load_dataset_tensors("mnist", a.data_dir)
    x, y = x[-500:], y[-500:]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch_size}, "
          f"{a.epochs} x {a.epoch_images} images, constant lr")
    print(f"{'lr':>6} {'epoch':>5} {'Loss2':>6} {'accuracy':>8} {'recon MSE':>9} {'flat MSE':>8}  decoder")
    for lr in a.lrs:
        with tempfile.TemporaryDirectory() as out:
            def report(rec):
                if "epoch" not in rec or "event" in rec:
                    return
                m = evaluate_model(load_checkpoint(Path(out) / "last.json").model, x, y)
                state = "collapsed (flat output)" if decoder_collapsed(m) else "reconstructs"
                print(f"{lr:>6g} {rec['epoch']:>5} {rec['loss2']:>6.3f} {m['accuracy']:>8.3f} {m['recon_mse']:>9.4f} "
                      f"{m['flat_mse']:>8.4f}  {state}", flush=True)

            cfg = TrainConfig(dataset="mnist", data_dir=a.data_dir, out=out, epochs=a.epochs, lr=lr,
                              lr_step=10**6, batch_size=a.batch_size, epoch_images=a.epoch_images,
                              test_images=100, stats_images=500, device="cpu")
            train(cfg, ModelConfig(beta=0.02), log=report, progress=False)


if __name__ == "__main__":
    try:
        main()
    except CSAEError as e:  # bad --lrs/--batch-size or missing MNIST: one line, not a traceback
        raise SystemExit(f"error: {e}")
