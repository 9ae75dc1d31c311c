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


def test_cvae_encoder_and_decoder_use_the_label():
    """The CVAE's posterior depends on the label (the encoder sees one-hot planes), and so does its decoding."""
    m = make("cvae", widths=(8, 8, 8, 8)).eval()
    for p in m.parameters():  # a random decoder head (it starts at zero): outputs must be able to differ
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    x = torch.rand(3, 1, 32, 32)
    y0, y1 = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    assert m.encoder.trunk.stem[0].in_channels == 1 + 10
    assert not torch.allclose(m._posterior(x, y0)[0], m._posterior(x, y1)[0])
    z = torch.zeros(3, 40)
    assert not torch.allclose(m.decode(z, y0), m.decode(z, y1))
    # a known-class image is reconstructed under the label it is given, an unknown one under the best label
    assert torch.allclose(m.reconstruct(x, y1), m.decode(m._posterior(x, y1)[0], y1))
    best = m.infer(x).pred
    assert torch.allclose(m.reconstruct(x), m.decode(m._posterior(x, best)[0], best))


def test_decoder_follows_table2_and_legacy_checkpoints_keep_their_relu():
    """Table 2: no ReLU after the decoder FC. A config from before the fix (no key) keeps its ReLU."""
    fresh = ModelConfig()
    assert fresh.decoder_fc_relu is False
    legacy = ModelConfig.from_dict({k: v for k, v in fresh.to_dict().items()
                                    if k not in ("decoder_fc_relu", "cvae_label_encoder")})
    assert legacy.decoder_fc_relu is True and legacy.cvae_label_encoder is False
    m = make(widths=(8, 8, 8, 8)).eval()
    with torch.no_grad():
        m.decoder.fc.bias.fill_(-5.0)  # every FC output negative: a ReLU would zero them all
        z = torch.zeros(2, 40)
        h_plain = m.decoder.blocks(m.decoder.fc(z).view(-1, *m.decoder.shape))
        assert torch.allclose(m.decode(z), m.decoder.head(h_plain))


@pytest.mark.parametrize("kind", ["csae", "csae-encoder", "basenet", "cvae"])
def test_one_interface_for_every_kind(kind):
    """encode / predict / infer work for every kind; decode/reconstruct where the class says there is a decoder,
    and a clear error (not AttributeError) where there is none."""
    m = make(kind, widths=(8, 8, 8, 8)).eval()
    x, y = torch.rand(4, 1, 32, 32), torch.randint(0, 10, (4,))
    out = m.infer(x, y)
    assert out.pred.shape == (4,) and out.z.shape[0] == 4
    assert torch.equal(m.predict(x), out.pred)
    assert (out.recon is not None) == m.has_decoder
    assert (getattr(m, "centroids", None) is not None) == m.has_centroids
    if m.has_decoder:
        assert m.reconstruct(x, y).shape == x.shape
        assert m.decode(out.z, y).shape == x.shape
    else:
        with pytest.raises(CSAEError, match="no decoder"):
            m.decode(out.z)
        with pytest.raises(CSAEError, match="no decoder"):
            m.reconstruct(x)
