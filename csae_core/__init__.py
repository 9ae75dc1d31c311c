"""CSAE with PEDCC (Zhu & Zhang): predefined evenly-distributed class centroids, the CSAE model
and its baselines, losses, training, evaluation and sampling. No UI and no I/O at import.

Import what you need from its module, one job each: `pedcc` (Algorithm 1), `model` (ModelConfig and the model
kinds' registry, KINDS; torch-free), `nets` (the networks), `losses`, `classify`, `train_config` (TrainConfig;
torch-free), `train`, `evaluate`, `sample`, `openset`, `checkpoint`,
`datasets`/`data` (the dataset registry and files), `preprocess` (pictures to model inputs), `images`
(user images, grids), `geometry`, `cli`. `import csae_core` itself imports neither torch nor numpy.
"""
from .errors import CSAEError

__all__ = ["CSAEError"]
