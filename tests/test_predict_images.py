"""Real images -> MNIST inputs (fastnet.images) and `fastnet predict` on rendered digits."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet import data, images

pytest.importorskip("PIL.Image", reason="Pillow is in the dev extra: pip install -e '.[dev]'")
from PIL import Image  # noqa: E402

N_IMAGES = 200


@pytest.fixture(scope="module")
def sample():
    return data.load("sample")  # first 8,000 train, last 2,000 held out


@pytest.fixture(scope="module")
def model(sample, tmp_path_factory):
    """[784, 30, 10] on the sample's first 8,000, a few epochs (about 94 % on the last 2,000)."""
    (X, y), _ = sample
    net = fastnet.Network([784, 30, 10], cost="cross_entropy", init="scaled", device="cpu", seed=1)
    net.fit(X, y, epochs=5, batch_size=10, eta=0.5)
    path = tmp_path_factory.mktemp("predict") / "mnist.npz"
    net.save(path)
    return net, path


def render(x, rng):
    """One held-out digit as a user might supply it: enlarged 1.5x to 5x (bilinear), placed at
    a random offset on a larger canvas, and drawn one of three ways: black ink on white
    (inverted), dark-blue ink on cream paper (RGB), or white on black (RGB). Returns a PIL image."""
    side = int(28 * rng.uniform(1.5, 5.0))
    digit = Image.fromarray(x.reshape(28, 28)).resize((side, side), Image.Resampling.BILINEAR)
    W, H = side + int(rng.integers(20, 120)), side + int(rng.integers(20, 120))
    canvas = Image.new("L", (W, H), 0)
    canvas.paste(digit, (int(rng.integers(0, W - side + 1)), int(rng.integers(0, H - side + 1))))
    a = np.asarray(canvas, dtype=np.float64)[..., None] / 255.0
    look = rng.integers(0, 3)
    if look == 0:
        return Image.fromarray(((1 - a[..., 0]) * 255).round().astype(np.uint8))
    if look == 1:
        paper, ink = np.array([245.0, 235.0, 215.0]), np.array([30.0, 40.0, 140.0])
        return Image.fromarray((paper * (1 - a) + ink * a).round().astype(np.uint8))
    return Image.fromarray((a[..., 0] * 255).round().astype(np.uint8)).convert("RGB")


def test_predict_on_rendered_pngs_matches_predict_on_arrays(sample, model, tmp_path):
    _, (Xte, yte) = sample
    net, model_path = model
    rng = np.random.default_rng(2024)
    idx = rng.choice(len(Xte), N_IMAGES, replace=False)
    paths = []
    for i, j in enumerate(idx):
        im = render(Xte[j], rng)
        p = tmp_path / f"digit{i:03d}.{'jpg' if i % 4 == 0 else 'png'}"  # every 4th a JPEG
        im.save(p, quality=92) if p.suffix == ".jpg" else im.save(p)
        paths.append(p)
    r = subprocess.run([sys.executable, "-m", "fastnet", "predict", str(model_path), *map(str, paths)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == N_IMAGES
    got = []
    for line, p in zip(lines, paths):
        head, rest = line.split(": ")
        assert head == str(p)
        got.append(int(rest.split()[0]))
    expected = np.asarray(net.predict(Xte[idx]))
    agree = float(np.mean(np.array(got) == expected))
    print(f"fastnet predict on {N_IMAGES} rendered files agrees with predict on the arrays for {agree:.1%}")
    assert agree >= 0.95, f"fastnet predict on the PNGs agrees with predict on the arrays for only {agree:.1%}"
    # and the files are really read: the labels are mostly right, not just consistent
    assert float(np.mean(np.array(got) == yte[idx])) >= 0.85


def test_mnist_digits_come_back_unchanged(sample):
    """An MNIST row, given as an image, is already MNIST-shaped: to_mnist changes ~nothing."""
    _, (Xte, _) = sample
    X = Xte[:300]
    back = np.stack([images.to_mnist(x.reshape(28, 28)) for x in X])
    assert back.shape == (300, 784) and back.dtype == np.float32
    assert np.mean(np.abs(back - X / 255.0)) < 0.005


def test_offset_inverted_colour_alpha_give_the_same_input(sample):
    _, (Xte, _) = sample
    x = Xte[7].reshape(28, 28)
    ref = images.to_mnist(x)
    big = np.zeros((90, 130), np.uint8)
    big[50:78, 11:39] = x                                   # offset in a larger field
    assert np.allclose(images.to_mnist(big), ref)
    assert np.allclose(images.to_mnist(255 - big), ref, atol=1e-6)   # dark ink on white
    rgb = np.stack([big, big, big], axis=-1)
    assert np.allclose(images.to_mnist(rgb), ref, atol=1e-6)
    rgba = np.zeros((90, 130, 4), np.uint8)                 # black ink on a transparent sheet
    rgba[..., 3] = big
    assert np.allclose(images.to_mnist(rgba), ref, atol=1e-6)
    assert np.allclose(images.to_mnist(big / 255.0), ref, atol=1e-6)  # floats in [0, 1]


def test_geometry_box_and_centre_of_mass():
    img = np.full((300, 120), 230, np.uint8)               # light grey paper
    img[20:280, 40:70] = 40                                 # a tall dark bar
    x = images.to_mnist(img).reshape(28, 28)
    rows = np.nonzero(x.max(axis=1) > 0.5)[0]
    cols = np.nonzero(x.max(axis=0) > 0.5)[0]
    assert rows[-1] - rows[0] + 1 == 20                     # the long side fills MNIST's 20-pixel box
    assert 1 <= cols[-1] - cols[0] + 1 <= 4                 # aspect kept (30 / 260 * 20 = 2.3)
    ys, xs = np.indices(x.shape)
    cy, cx = (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()
    assert abs(cy - 14) <= 0.501 and abs(cx - 14) <= 0.501  # centre of mass at MNIST's (14, 14)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0


def test_load_image_formats(tmp_path, sample):
    _, (Xte, _) = sample
    x = Xte[3].reshape(28, 28)
    ref = images.to_mnist(x)
    Image.fromarray(255 - x).save(tmp_path / "grey.png")
    Image.fromarray(255 - x).convert("P").save(tmp_path / "palette.png")
    Image.fromarray((255 - x).astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(np.stack([255 - x] * 3, -1)).save(tmp_path / "rgb.jpg", quality=98)
    for name in ("grey.png", "palette.png", "grey16.png"):
        assert np.allclose(images.load_image(tmp_path / name), ref, atol=0.02), name
    assert np.abs(images.load_image(tmp_path / "rgb.jpg") - ref).mean() < 0.03
    X = images.load_images([tmp_path / "grey.png", tmp_path / "rgb.jpg"])
    assert X.shape == (2, 784) and X.dtype == np.float32


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((10, 10)), "no ink"),
    (np.full((10, 10, 3), 128, np.uint8), "no ink"),
    (np.zeros((4, 4, 5)), "must have shape"),
    (np.array([[np.nan, 1.0]]), "NaN"),
    (np.array([["a"]]), "numeric"),
])
def test_to_mnist_refuses(bad, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment):
        images.to_mnist(bad)


def test_load_image_errors_name_the_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not an image Pillow can read"):
        images.load_image(p)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        images.load_image(tmp_path / "missing.png")
    buf = io.BytesIO()
    Image.new("L", (20, 20), 255).save(buf, "PNG")
    (tmp_path / "white.png").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=f"{os.sep}white.png: image has no ink"):
        images.load_image(tmp_path / "white.png")
