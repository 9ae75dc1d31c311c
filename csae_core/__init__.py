"""CSAE with PEDCC (Zhu & Zhang): predefined evenly-distributed class centroids, the CSAE model
and its baselines, losses, training, evaluation and sampling. No UI and no I/O at import.

The names below are imported on first use (PEP 562), so `import csae_core` and the PEDCC path
(numpy only) do not pay for importing torch.
"""
from importlib import import_module

from .errors import CSAEError

# public name -> the module that defines it
_EXPORTS = {
    "generate_pedcc": "pedcc", "pedcc_metrics": "pedcc", "PEDCCResult": "pedcc",
    "ModelConfig": "model", "ModelOutput": "model", "MODEL_KINDS": "model", "build_model": "model",
    "WaveletLoss": "losses", "centroid_mse": "losses", "kl_divergence": "losses",
    "nearest_centroid": "classify",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
}

__all__ = ["CSAEError", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'csae_core' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
