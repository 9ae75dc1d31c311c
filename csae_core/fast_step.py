"""Fewer kernel launches per training step (TrainConfig.compile), opt-in.

One CSAE step issues about 2,600 aten calls; at batch 1024 on a GPU the CPU's launch time is as long as the
GPU's work, so the GPU idles half the time. Two ways around it, both through `torch.compile` of the
network's forward (whose backward AOTAutograd captures with it):

- "compile": TorchInductor fuses the graph into few kernels; on CUDA with mode="reduce-overhead", which also
  replays them as CUDA graphs (one launch per step's forward and backward).
- "cudagraph": no fusion, the captured aten graph replayed as a CUDA graph (backend "cudagraphs"). On the
  CPU there is no CUDA graph: the same captured graph runs op by op ("aot_eager"), which is what the CPU test
  compares with the eager step.

Shapes are static (`dynamic=False`): an epoch's last, smaller batch gets its own graph once.
"""
from __future__ import annotations

import torch

from .train_config import check_compile_mode as check_mode


def compile_kwargs(mode: str, device_type: str) -> dict:
    """torch.compile's arguments for `mode` on a device of `device_type` ("cuda" or "cpu")."""
    check_mode(mode)
    cuda = device_type == "cuda"
    if mode == "compile":
        return dict(mode="reduce-overhead") if cuda else {}
    return dict(backend="cudagraphs" if cuda else "aot_eager")


def fast_net(net: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    """`net` itself for "none", else its compiled forward (the module's parameters and state_dict are shared)."""
    if mode == "none":
        return net
    check_mode(mode)
    if mode == "compile":
        import torch._inductor.config as inductor_config
        # Inductor's own RNG would draw other noise than eager (CSAE's z*, the CVAE's sample) from the same
        # seed: a resumed or compared run would not repeat. Eager's random ops keep it exact.
        inductor_config.fallback_random = True
    return torch.compile(net, dynamic=False, **compile_kwargs(mode, torch.device(device).type))
