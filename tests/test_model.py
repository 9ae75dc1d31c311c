"""Model shapes (Table 2), the noise of eq. 12-13, and each kind's losses and predictions."""
import math

import pytest
import torch

from csae_core.errors import CSAEError
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc


def make(kind="csae", **kw):
    cfg = ModelConfig(kind=kind, **kw)
    centroids = generate_pedcc(cfg.num_classes, cfg.latent_dim, converge=True).scaled()
    torch.manual_seed(0)
    return build_model(cfg, centroids)


def test_table2_shapes():
    m = make()
    x = torch.rand(4, 1, 32, 32)
    assert m.encoder.trunk(x).shape == (4, 128, 4, 4)
    out = m.eval()(x)
    assert out.z.shape == (4, 40) and out.recon.shape == (4, 1, 32, 32)
    # the decoder has no sigmoid: its output is not confined to (0, 1)
    assert isinstance(m.decoder.head, torch.nn.Conv2d) and m.decoder.head.kernel_size == (1, 1)


def test_face_setting_three_channels_128px():
    m = make(in_channels=3, image_size=128, latent_dim=64, num_classes=5)
    x = torch.rand(2, 3, 128, 128)
    out = m.eval()(x)
    assert out.z.shape == (2, 64) and out.recon.shape == (2, 3, 128, 128)
    assert len(m.recon_loss.dwt.h0_col) and m.recon_loss.dwt.J == 3  # J = 3 at 128x128 as in the paper


@pytest.mark.parametrize("kind", ["csae", "csae-encoder", "basenet", "cvae"])
def test_every_kind_trains_and_predicts(kind):
    m = make(kind, widths=(8, 8, 8, 8), beta=0.04)
    x, y = torch.rand(6, 1, 32, 32), torch.randint(0, 10, (6,))
    m.train()
    losses = m.loss(m(x, y), x, y)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    pred = m.eval().predict(x)
    assert pred.shape == (6,) and pred.min() >= 0 and pred.max() < 10


def test_noise_only_in_training():
    m = make(beta=0.5, widths=(8, 8, 8, 8))
    torch.nn.init.normal_(m.decoder.head.weight)  # the head starts at zero: make the output depend on z
    x = torch.rand(5, 1, 32, 32)
    m.eval()
    a, b = m(x), m(x)
    assert torch.equal(a.recon, b.recon)
    assert torch.equal(m.reconstruct(x), a.recon)
    m.train()
    c, d = m(x), m(x)
    assert torch.equal(c.z, d.z)  # the encoder is deterministic ...
    assert not torch.allclose(c.recon, d.recon)  # ... the decoder input is noised (eq. 13)


def test_noise_scale_is_alpha_beta():
    m = make(beta=0.08, widths=(8, 8, 8, 8))
    m.train()
    seen = {}
    m.decoder.register_forward_pre_hook(lambda mod, args: seen.__setitem__("z_in", args[0]))
    torch.manual_seed(1)
    out = m(torch.rand(512, 1, 32, 32))
    noise = seen["z_in"] - out.z
    assert noise.std().item() == pytest.approx(math.sqrt(40) * 0.08, rel=0.05)  # eq. 12: alpha * beta


def test_beta_zero_has_no_noise():
    m = make(beta=0.0, widths=(8, 8, 8, 8)).train()
    torch.nn.init.normal_(m.decoder.head.weight)
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(m(x).recon, m(x).recon)


def test_centroids_are_a_fixed_buffer():
    m = make()
    assert "centroids" in dict(m.named_buffers())
    assert all(p is not m.centroids for p in m.parameters())
    assert m.centroids.norm(dim=1) == pytest.approx(torch.full((10,), math.sqrt(40)), rel=1e-5)


@pytest.mark.parametrize("kw,word", [({"kind": "gan"}, "model"), ({"beta": 1.5}, "beta"),
                                     ({"image_size": 30}, "multiple"), ({"recon_loss": "ssim"}, "recon_loss")])
def test_bad_config_is_a_clear_error(kw, word):
    with pytest.raises(CSAEError, match=word):
        ModelConfig(**kw)
