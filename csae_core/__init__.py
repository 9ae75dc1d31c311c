"""CSAE with PEDCC (Zhu & Zhang): predefined evenly-distributed class centroids, the CSAE model
and its baselines, losses, training, evaluation and sampling. No UI and no I/O at import."""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .classify import nearest_centroid
from .errors import CSAEError
from .losses import WaveletLoss, centroid_mse, kl_divergence
from .model import MODEL_KINDS, ModelConfig, ModelOutput, build_model
from .pedcc import PEDCCResult, generate_pedcc, pedcc_metrics

__all__ = ["CSAEError", "generate_pedcc", "pedcc_metrics", "PEDCCResult", "ModelConfig", "ModelOutput",
           "MODEL_KINDS", "build_model", "WaveletLoss", "centroid_mse", "kl_divergence", "nearest_centroid",
           "Checkpoint", "load_checkpoint", "save_checkpoint"]
