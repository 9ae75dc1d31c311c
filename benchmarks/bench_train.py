"""Training throughput (images/s) of every model kind on CPU, and on the GPU when one is present.

    python benchmarks/bench_train.py [--batch-size 128] [--steps 10]

Synthetic MNIST-shaped batches, the real models and losses, one optimizer step per batch
(the trainer's inner loop: channels-last everywhere, bf16 autocast on CUDA).
"""
import argparse

import torch

from csae_core.model import MODEL_KINDS, ModelConfig
from csae_core.pedcc import generate_pedcc
from csae_core.throughput import training_images_per_s


def bench(kind, device, batch, steps):
    torch.manual_seed(0)
    return training_images_per_s(ModelConfig(kind=kind, beta=0.02), generate_pedcc(10, 40, converge=True).scaled(),
                                 batch, 2, steps, device)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {a.batch_size}")
    for device in devices:
        for kind in MODEL_KINDS:
            print(f"{device.type:>5} {kind:<13} {bench(kind, device, a.batch_size, a.steps):8.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
