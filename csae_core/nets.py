"""The networks of the model kinds (Table 2 and the baselines of Table 3): CSAE, CSAE_encoder, Basenet, CVAE.

Every model maps images (B, C, H, W) in [0, 1] to a `ModelOutput`, computes its own training
losses with `loss(out, x, y)`, and classifies with `predict(x)`, so the trainer never branches
on the model kind. The PEDCC class centres are a buffer: saved with the weights, never trained.
The kinds' registry and ModelConfig are in csae_core/model.py (torch-free, so a refused config costs no torch
import); model.py also re-exports these classes, so `from csae_core.model import CSAE` keeps working.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .classify import nearest_centroid
from .errors import CSAEError
from .losses import WaveletLoss, centroid_mse, default_wavelet_levels, kl_divergence, kl_per_image
from .model import KINDS, ModelConfig

__all__ = ["ModelOutput", "CSAE", "CSAEEncoder", "Basenet", "CVAE"]


@dataclass
class ModelOutput:
    z: torch.Tensor | None = None  # (B, d) latent: encoder output (CVAE: the posterior mean)
    recon: torch.Tensor | None = None  # (B, C, H, W) decoded image
    logits: torch.Tensor | None = None  # (B, n) Basenet class scores
    logvar: torch.Tensor | None = None  # (B, d) CVAE posterior log-variance
    pred: torch.Tensor | None = None  # (B,) predicted class (from `infer`)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)  # BN follows: no bias


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class UpBlock(nn.Module):
    """Deconvolution block of Table 2: bilinear x2 upsampling, then a residual conv block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = ResidualBlock(cin, cout)

    def forward(self, x):
        return self.block(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class ConvTrunk(nn.Module):
    """Stem conv then stride-2 residual blocks: (B, C, 32, 32) -> (B, 128, 4, 4) with the defaults."""

    def __init__(self, cfg: ModelConfig, extra_channels: int = 0):
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(conv3x3(cfg.in_channels + extra_channels, w[0]), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, stride=2) for a, b in zip(w[:-1], w[1:])])

    def forward(self, x):
        return self.blocks(self.stem(x))


class Encoder(nn.Module):
    """ConvTrunk then one fully-connected layer to `out_dim` (d, or 2d for the CVAE's mean and log-variance)."""

    def __init__(self, cfg: ModelConfig, out_dim: int, extra_channels: int = 0):
        super().__init__()
        self.trunk = ConvTrunk(cfg, extra_channels)
        self.fc = nn.Linear(cfg.widths[-1] * cfg.feature_size**2, out_dim)

    def forward(self, x):
        return self.fc(self.trunk(x).flatten(1))  # (B, out_dim)


class Decoder(nn.Module):
    """FC to (128, 4, 4), up-blocks 128->128->64->32 at 8, 16, 32 px, then a 1x1 conv to the image channels.
    No sigmoid (a difference from the CVAE the paper points out) and, as in Table 2, no ReLU after the FC
    (`decoder_fc_relu` restores the ReLU of checkpoints trained before that was fixed)."""

    def __init__(self, cfg: ModelConfig, in_dim: int):
        super().__init__()
        w = cfg.widths
        self.shape = (w[-1], cfg.feature_size, cfg.feature_size)
        self.fc_relu = cfg.decoder_fc_relu
        self.fc = nn.Linear(in_dim, w[-1] * cfg.feature_size**2)
        # Output widths of the up-blocks mirror the encoder: (128, 64, 32) for widths (32, 64, 128, 128).
        outs = list(reversed(w[:-1]))
        ins = [w[-1]] + outs[:-1]
        self.blocks = nn.Sequential(*[UpBlock(a, b) for a, b in zip(ins, outs)])
        self.head = nn.Conv2d(w[0], cfg.in_channels, 1)
        # Start from a flat output: random initial high frequencies make the wavelet L1 terms'
        # gradients ~50x Loss1's, which drove training at lr 0.1 to NaN within a few steps.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, z):
        h = self.fc(z)
        if self.fc_relu:
            h = F.relu(h)
        return self.head(self.blocks(h.view(-1, *self.shape)))  # (B, C, 32, 32)


def _recon_loss(cfg: ModelConfig) -> nn.Module:
    if cfg.recon_loss == "mse":
        return nn.MSELoss()
    return WaveletLoss(cfg.wavelet_levels or default_wavelet_levels(cfg.image_size), cfg.wavelet)


class _Base(nn.Module):
    """The one interface every model kind shares (the pythae way):

    encode(x, y=None) -> z, decode(z, y=None) -> image, reconstruct(x, y=None) -> image,
    predict(x) -> class, infer(x, y=None) -> ModelOutput(z, pred, recon) in one pass, and
    forward/loss for training. What a kind can do is declared here, read everywhere:
    """

    has_decoder = False  # decode/reconstruct work
    has_centroids = False  # latents are classified by the nearest PEDCC centroid (`self.centroids`)
    has_logits = False  # a softmax classifier (open-set scores from logits)
    label_conditioned = False  # the decoder takes a class label; sampling draws z from N(0, I)
    uses_beta = False  # ModelConfig.beta (the decoder-input noise of eq. 12-13) changes its training

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The latent the app plots (same as encode(x))."""
        return self.encode(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        decoders = " or ".join(k for k, v in KINDS.items() if v.cls.has_decoder)
        raise CSAEError(f"a {self.config.kind} model has no decoder, so it cannot decode or reconstruct images; "
                        f"use a {decoders} checkpoint")

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self.has_decoder:
            self.decode(x)  # raises the clear "no decoder" error
        return self.infer(x, y).recon

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.infer(x, with_recon=False).pred

    def predictions_from_output(self, out: ModelOutput) -> torch.Tensor | None:
        """Training-batch predictions from a forward pass already done; None where that is not cheap."""
        return None

    @torch.no_grad()
    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None, with_recon: bool = True) -> ModelOutput:
        """Latent, prediction and (with a decoder) reconstruction of x in one pass, eval semantics."""
        raise NotImplementedError


class CSAE(_Base):
    """Encoder -> z (classified by the nearest PEDCC centroid) -> (+ noise in training) -> decoder."""

    has_decoder = True
    has_centroids = True
    uses_beta = True

    def __init__(self, cfg: ModelConfig, centroids: torch.Tensor):
        super().__init__(cfg)
        if centroids.shape != (cfg.num_classes, cfg.latent_dim):
            raise CSAEError(f"centroids must have shape ({cfg.num_classes}, {cfg.latent_dim}), "
                            f"got {tuple(centroids.shape)}")
        self.register_buffer("centroids", centroids.float().clone())  # (n, d), scaled by alpha
        self.encoder = Encoder(cfg, cfg.latent_dim)
        self.decoder = Decoder(cfg, cfg.latent_dim)
        self.recon_loss = _recon_loss(cfg)

    def encode(self, x, y=None):
        return self.encoder(x)  # the label is not needed: z is classified, not conditioned

    def decode(self, z, y=None):
        return self.decoder(z)

    def forward(self, x, y=None) -> ModelOutput:
        z = self.encoder(x)
        z_in = z
        if self.training and self.config.beta > 0:  # eq. 12-13: noise only in the training phase
            z_in = z + self.config.alpha * self.config.beta * torch.randn_like(z)
        return ModelOutput(z=z, recon=self.decoder(z_in))

    def loss(self, out: ModelOutput, x, y) -> dict:
        loss1 = centroid_mse(out.z.float(), self.centroids, y)
        loss2 = self.recon_loss(out.recon, x)
        return {"loss": loss1 + loss2, "loss1": loss1, "loss2": loss2}

    def predictions_from_output(self, out):
        return nearest_centroid(out.z, self.centroids)[0]

    @torch.no_grad()
    def infer(self, x, y=None, with_recon=True):
        z = self.encoder(x)
        recon = self.decoder(z) if with_recon and self.has_decoder else None
        return ModelOutput(z=z, recon=recon, pred=nearest_centroid(z, self.centroids)[0])


class CSAEEncoder(CSAE):
    """CSAE_encoder of Table 3: the encoder trained with Loss1 alone, nearest-centroid classifier."""

    has_decoder = False
    uses_beta = False  # no decoder, so no decoder-input noise

    def __init__(self, cfg: ModelConfig, centroids: torch.Tensor):
        _Base.__init__(self, cfg)
        self.register_buffer("centroids", centroids.float().clone())
        self.encoder = Encoder(cfg, cfg.latent_dim)

    decode = _Base.decode

    def forward(self, x, y=None):
        return ModelOutput(z=self.encoder(x))

    def loss(self, out, x, y):
        loss1 = centroid_mse(out.z.float(), self.centroids, y)
        return {"loss": loss1, "loss1": loss1}


class Basenet(_Base):
    """Basenet of Table 3: the same conv trunk, 4x4 average pool, linear + softmax, cross-entropy."""

    has_logits = True

    def __init__(self, cfg: ModelConfig, centroids: torch.Tensor | None = None):
        super().__init__(cfg)
        self.trunk = ConvTrunk(cfg)
        self.fc = nn.Linear(cfg.widths[-1], cfg.num_classes)

    def encode(self, x, y=None):
        return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)  # (B, 128) pooled features

    def forward(self, x, y=None):
        z = self.encode(x)
        return ModelOutput(z=z, logits=self.fc(z))

    def loss(self, out, x, y):
        ce = F.cross_entropy(out.logits.float(), y)
        return {"loss": ce, "ce": ce}

    def predictions_from_output(self, out):
        return out.logits.argmax(1)

    @torch.no_grad()
    def infer(self, x, y=None, with_recon=True):
        out = self.forward(x)
        out.pred = out.logits.argmax(1)
        return out


class CVAE(_Base):
    """Conditional VAE with the same encoder/decoder: the encoder sees [x, one-hot(y)] as channels, the
    decoder [z, one-hot(y)]; mean and log-variance heads, sigmoid output, BCE + KL. Classifies by the label
    with the best ELBO; reconstructs under the given label (known-class images) or the best one (letters)."""

    has_decoder = True
    label_conditioned = True

    def __init__(self, cfg: ModelConfig, centroids: torch.Tensor | None = None):
        super().__init__(cfg)
        self.encoder = Encoder(cfg, 2 * cfg.latent_dim, cfg.num_classes if cfg.cvae_label_encoder else 0)
        self.decoder = Decoder(cfg, cfg.latent_dim + cfg.num_classes)

    def _onehot(self, y, dtype):
        return F.one_hot(y, self.config.num_classes).to(dtype)

    def _posterior(self, x, y):
        if self.config.cvae_label_encoder:
            planes = self._onehot(y, x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, planes], dim=1)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)  # keep exp() finite early in training

    def _decode_logits(self, z, y):
        return self.decoder(torch.cat([z, self._onehot(y, z.dtype)], dim=1))

    def encode(self, x, y=None):
        """Posterior mean under label y (default: the best-fitting label, which needs every label's ELBO)."""
        if y is not None:
            return self._posterior(x, y)[0]  # one encode, not one per class
        return self.infer(x, with_recon=False).z

    def decode(self, z, y=None):
        if y is None:
            raise CSAEError("a CVAE decodes a latent together with a class label: pass y")
        return torch.sigmoid(self._decode_logits(z, y))

    def forward(self, x, y=None):
        if y is None:
            raise CSAEError("a CVAE is trained with the class label: pass y")
        mu, logvar = self._posterior(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        logits = self._decode_logits(z, y)
        return ModelOutput(z=mu, recon=torch.sigmoid(logits), logits=logits, logvar=logvar)

    def loss(self, out, x, y):
        # The negative ELBO (BCE summed over pixels + KL) divided by the pixel count, so one lr
        # scale serves both this and the CSAE recipes; the optimum is the same.
        pixels = x[0].numel()
        bce = F.binary_cross_entropy_with_logits(out.logits.float(), x.float().clamp(0, 1), reduction="sum")
        bce = bce / x.shape[0]
        kl = kl_divergence(out.z.float(), out.logvar.float())
        return {"loss": (bce + kl) / pixels, "bce": bce, "kl": kl}

    @torch.no_grad()
    def neg_elbo(self, x):
        """(B, n) negative ELBO (posterior-mean BCE + KL, in nats) of x under every label, with the
        posterior means (n, B, d): one encode and one decode per class (n is small)."""
        n = self.config.num_classes
        scores, mus = [], []
        target = x.float().clamp(0, 1)
        for k in range(n):
            y = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            mu, logvar = self._posterior(x, y)
            bce = F.binary_cross_entropy_with_logits(self._decode_logits(mu, y).float(), target,
                                                     reduction="none").flatten(1).sum(1)
            scores.append(bce + kl_per_image(mu.float(), logvar.float()))
            mus.append(mu)
        return torch.stack(scores, 1), torch.stack(mus)

    @torch.no_grad()
    def infer(self, x, y=None, with_recon=True):
        scores, mus = self.neg_elbo(x)
        pred = scores.argmin(1)
        label = pred if y is None else y  # known-class images decode under their true label
        z = mus[label, torch.arange(x.shape[0], device=x.device)]
        recon = torch.sigmoid(self._decode_logits(z, label)) if with_recon else None
        return ModelOutput(z=z, recon=recon, pred=pred)
