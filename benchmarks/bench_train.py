"""Training throughput (images/s) of every model kind on CPU, and on the GPU when one is present.

    python benchmarks/bench_train.py [--batch-size 128] [--steps 10]

Synthetic MNIST-shaped batches, the real models and losses, one optimizer step per batch
(the trainer's inner loop: channels-last everywhere, bf16 autocast on CUDA).
"""
import argparse
import time

import torch

from csae_core.model import MODEL_KINDS, ModelConfig, build_model
from csae_core.pedcc import generate_pedcc


def bench(kind, device, batch, steps):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, beta=0.02)
    model = build_model(cfg, generate_pedcc(10, 40, converge=True).scaled()).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 1, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    model = model.to(memory_format=torch.channels_last)  # as the trainer does, on every device
    x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 2):  # 2 warm-up steps
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(model(x, y), x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


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
