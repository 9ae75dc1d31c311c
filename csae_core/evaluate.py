"""Evaluation: accuracy, confusion, reconstruction MSE/PSNR, class latent statistics and the
distance matrix between learned class means (Fig. 10)."""
from __future__ import annotations

import math
from typing import Iterator

import torch

from .preprocess import to_float

__all__ = ["batches", "encode", "latent_stats", "evaluate_model", "evaluate_checkpoint", "test_split",
           "reconstruction_errors", "decoder_collapsed"]


def batches(images: torch.Tensor, batch_size: int, device) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (slice, float batch in [0, 1]) from uint8 (N, C, H, W) images, converting one batch at a time."""
    for i in range(0, images.shape[0], batch_size):
        sl = slice(i, min(i + batch_size, images.shape[0]))
        x = images[sl].to(device, non_blocking=True)
        yield sl, to_float(x)


@torch.no_grad()
def encode(model, images: torch.Tensor, batch_size: int = 500, device="cpu") -> torch.Tensor:
    """Latents (N, d) of uint8 images (N, C, H, W), model in eval mode."""
    model.eval()
    return torch.cat([model.embed(x).float().cpu() for _, x in batches(images, batch_size, device)])


def latent_stats(z: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean (n, d) and covariance (n, d, d) of latents z (N, d) (section 4.2)."""
    d = z.shape[1]
    means, covs = torch.zeros(num_classes, d), torch.zeros(num_classes, d, d)
    for k in range(num_classes):
        zk = z[labels == k].double()
        if len(zk) == 0:
            continue
        means[k] = zk.mean(0).float()
        covs[k] = (torch.cov(zk.T) if len(zk) > 1 else torch.zeros(d, d, dtype=torch.float64)).float()
    return means, covs


def reconstruction_errors(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (B,) of the reconstruction clipped to the displayable range [0, 1]."""
    return (recon.float().clamp(0, 1) - x.float()).pow(2).flatten(1).mean(1)


def decoder_collapsed(metrics: dict) -> bool:
    """True when the reconstructions are no better than a flat grey image: a decoder that has not learned
    or has collapsed to a constant output (seen at lr 0.1, batch 64)."""
    return metrics.get("recon_mse") is not None and metrics["recon_mse"] >= 0.9 * metrics["flat_mse"]


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_model(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                   device="cpu", class_names: list[str] | None = None) -> dict:
    """Test metrics of any model kind on uint8 images (N, C, H, W) with labels (N,)."""
    model.eval()
    n = model.config.num_classes
    preds, errs, zs = [], [], []
    pixel_sum = pixel_sq = 0.0  # for the flat-image baseline; kept on the device (no sync per batch)
    labels_dev = labels.to(device)
    for sl, x in batches(images, batch_size, device):
        # One pass gives latent, prediction and reconstruction; known-class images are reconstructed
        # under their true label (only a label-conditioned decoder, the CVAE's, uses it).
        out = model.infer(x, labels_dev[sl])
        preds.append(out.pred.cpu())
        if out.recon is not None:
            errs.append(reconstruction_errors(out.recon, x).cpu())
            pixel_sum, pixel_sq = pixel_sum + x.sum(), pixel_sq + x.pow(2).sum()
        zs.append(out.z.float().cpu())
    pred = torch.cat(preds)
    labels = labels.cpu().long()
    confusion = torch.bincount(labels * n + pred, minlength=n * n).view(n, n)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1).float())
    out = {
        "test_images": int(labels.numel()),
        "accuracy": float((pred == labels).float().mean()),
        "per_class_accuracy": [round(float(v), 6) for v in per_class],
        "confusion": confusion.tolist(),
        "class_names": class_names or [str(i) for i in range(n)],
        "recon_mse": None,
        "psnr": None,
    }
    if errs:
        e = torch.cat(errs)
        out["recon_mse"] = float(e.mean())
        out["psnr"] = float(psnr(e).mean())  # mean of per-image PSNR (peak 1.0)
        # The MSE of the best flat image (every pixel the test-set mean): a decoder that does no better
        # has collapsed to a constant output, whatever the accuracy says.
        pixels = images[0].numel() * len(images)
        out["flat_mse"] = float(pixel_sq / pixels - (pixel_sum / pixels) ** 2)
    z = torch.cat(zs)
    means, _ = latent_stats(z, labels, n)
    out["latent_mean_distances"] = [[round(float(v), 4) for v in row] for row in torch.cdist(means, means)]
    if getattr(model, "centroids", None) is not None:
        c = model.centroids.cpu()
        out["pedcc_distances"] = [[round(float(v), 4) for v in row] for row in torch.cdist(c, c)]
        off = ~torch.eye(n, dtype=torch.bool)
        out["min_latent_mean_distance"] = float(torch.cdist(means, means)[off].min())
    if not math.isfinite(out["accuracy"]):
        out["accuracy"] = 0.0
    return out


def test_split(dataset: str, data_dir=None, image_size: int = 0):
    """A dataset's test images (uint8, padded as the models were trained) and labels."""
    from .preprocess import load_dataset_tensors

    return load_dataset_tensors(dataset, data_dir, image_size)[1]


def evaluate_checkpoint(ckpt, data_dir=None, limit: int = 0, split=None) -> dict:
    """What `python -m csae_core evaluate --json` prints and the zoo records: evaluate_model on the checkpoint's
    test set (`split`: (images, labels) already read; `limit`: only the first N), plus which model it was."""
    x, y = split if split is not None else test_split(ckpt.meta.get("dataset", "mnist"), data_dir,
                                                       ckpt.config.image_size)
    if limit:
        x, y = x[:limit], y[:limit]
    m = evaluate_model(ckpt.model, x, y, class_names=ckpt.class_names)
    m.update(checkpoint=str(ckpt.path) + ".json", dataset=ckpt.meta.get("dataset"), model=ckpt.config.kind,
             beta=ckpt.config.beta, epoch=ckpt.meta.get("epoch"))
    return m
