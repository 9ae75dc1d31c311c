"""Training images/s of one model on one device: the trainer's step (channels-last; bf16 autocast on CUDA) on
random images of the model's shape. The Train view's time estimate and benchmarks/bench_train.py use it."""
from __future__ import annotations

import time

import torch

from .model import ModelConfig, build_model


def training_images_per_s(cfg: ModelConfig, centroids: torch.Tensor | None, batch: int, warm: int, timed: int,
                          device: str | torch.device = "cpu") -> float:
    """`warm` untimed steps (cuDNN's choice, allocator), then images/s over `timed` SGD steps of batch `batch`."""
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True  # as train() on the GPU
    model = build_model(cfg, centroids).to(dev).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    size = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    x = torch.rand(*size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.num_classes, (batch,), device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for i in range(warm + timed):
        if i == warm:
            sync()
            t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model.loss(model(x, y), x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return batch * timed / (time.perf_counter() - t0)
