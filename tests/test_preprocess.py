"""csae_core.preprocess: the one path from uint8 pictures to model inputs and back."""
import numpy as np
import pytest
import torch

from csae_core.errors import CSAEError
from csae_core.preprocess import load_dataset_tensors, pad, to_model_input, to_uint8


def _random_pictures(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(3, 28, 28), (2, 1, 28, 28), (2, 3, 28, 28), (4, 27, 30)])
def test_pad_centres_the_picture_in_zeros(shape):
    x = _random_pictures(shape)
    out = pad(x)
    assert out.shape == shape[:-2] + (32, 32) and out.dtype == np.uint8
    h, w = shape[-2:]
    top, left = (32 - h) // 2, (32 - w) // 2
    np.testing.assert_array_equal(out[..., top:top + h, left:left + w], x)
    assert int(out.sum(dtype=np.int64)) == int(x.sum(dtype=np.int64))  # the border is all zeros
    # torch in, torch out, the same pixels
    np.testing.assert_array_equal(pad(torch.from_numpy(x)).numpy(), out)


def test_pad_leaves_full_size_pictures_alone_and_refuses_bigger_ones():
    x = _random_pictures((2, 32, 32))
    assert pad(x) is x
    with pytest.raises(CSAEError, match="larger than the model's 16x16"):
        pad(x, 16)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_to_model_input_scales_and_pads(as_tensor):
    x = _random_pictures((5, 28, 28), seed=1)
    y = to_model_input(torch.from_numpy(x) if as_tensor else x)
    assert y.shape == (5, 1, 32, 32) and y.dtype == torch.float32
    expected = np.pad(x.astype(np.float32) / 255, ((0, 0), (2, 2), (2, 2)))[:, None]
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-7)
    # a list of 28x28 pictures (user letters) works the same way
    torch.testing.assert_close(to_model_input(list(x)), y)
    # float input is taken as already in [0, 1]
    torch.testing.assert_close(to_model_input(y), y)


def test_round_trip_returns_the_padded_pictures():
    x = _random_pictures((6, 28, 28), seed=2)
    np.testing.assert_array_equal(to_uint8(to_model_input(x)), pad(x))
    rgb = _random_pictures((2, 3, 32, 32), seed=3)
    back = to_uint8(to_model_input(rgb))
    assert back.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(back, rgb.transpose(0, 2, 3, 1))


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-0.5, 0.0, 0.4999 / 255, 0.5001 / 255, 1.0, 7.0]).reshape(1, 1, 1, 6)
    assert to_uint8(x).tolist() == [[[0, 0, 0, 1, 255, 255]]]


def test_bad_shapes_are_csae_errors():
    with pytest.raises(CSAEError, match="expected images"):
        to_model_input(np.zeros((28, 28), np.uint8))


def test_load_dataset_tensors_pads_the_splits(app_fixture):
    from csae_core.data import load_split

    (train_x, train_y), (test_x, test_y), names = load_dataset_tensors("mnist", app_fixture["data"])
    assert train_x.shape == (60, 1, 32, 32) and test_x.shape == (200, 1, 32, 32) and train_x.dtype == torch.uint8
    raw, labels = load_split("mnist", "test", app_fixture["data"])
    assert torch.equal(test_x[:, 0, 2:30, 2:30], raw) and torch.equal(test_y, labels)
    assert int(test_x.sum()) == int(raw.sum())  # nothing but zeros around
    assert len(names) == 10
    with pytest.raises(CSAEError, match="unknown dataset"):
        load_dataset_tensors("no-such-dataset-or-folder")
