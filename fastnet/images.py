"""Real images to MNIST-style inputs: PNG/JPEG of any size, colour or grey, -> 28 x 28.

MNIST digits are white ink on black, the ink's bounding box scaled to fit 20 x 20
pixels (aspect kept, anti-aliased), then placed in a 28 x 28 field so that the centre of
mass of the ink sits at the centre (LeCun et al.). :func:`to_mnist` does the same to an
image array:

1. grey: colour is reduced to luminance (ITU-R 601-2, as Pillow's ``"L"`` mode);
   transparent pixels become background;
2. invert when the background is light: the background level is the median of the
   border pixels; when it is above mid-grey the image is inverted (dark ink on paper
   becomes light ink on black);
3. the background level is subtracted and the ink stretched to reach 1.0, so a grey
   paper or a faint pen still gives MNIST's contrast;
4. crop to the ink's bounding box (pixels above :data:`INK_THRESHOLD`, 30 % of the
   peak: the stroke's edge, not its faint halo), scale it so the longer side is 20
   pixels, aspect kept, with an anti-aliased Lanczos-3 filter (plain NumPy);
5. paste it in 28 x 28 so that the centre of mass is at pixel (14, 14), the mean of
   MNIST's own digits, by a whole-pixel shift as MNIST was made (a sub-pixel shift would
   blur the strokes), keeping all the ink inside the field.

Measured on the embedded sample: the 200 held-out digits rendered as PNG/JPEG files
(inverted or not, colour, enlarged 1.5x to 5x with bilinear interpolation, offset on a
larger canvas) get the label the network gives the original array for about 97 % of
them (``tests/test_predict_images.py``); the original 28 x 28 arrays themselves come
back essentially unchanged.

Reading files needs Pillow, an optional extra: ``pip install "fastnet[images]"``; without
it :func:`load_image` raises :class:`fastnet.plot.MissingExtraError` naming the extra.
"""
from __future__ import annotations

import math
import os

import numpy as np

from fastnet.plot import MissingExtraError

__all__ = ["BOX", "SIZE", "load_image", "load_images", "require", "to_mnist"]

#: Side of the output field (MNIST: 28).
SIZE = 28
#: Side of the box the ink's bounding box is scaled into (MNIST: 20).
BOX = 20
#: Fraction of the peak above which a pixel counts as ink for the bounding box.
INK_THRESHOLD = 0.3
#: Largest image :func:`load_image` decodes, in pixels (checked on the header first; under
#: Pillow's own 89 Mpx warning, so that never shows).
MAX_PIXELS = 64_000_000


def require(what: str = "reading images"):
    """Import Pillow or raise :class:`fastnet.plot.MissingExtraError` naming ``fastnet[images]``.

    Returns the ``PIL.Image`` module.

    >>> from fastnet.images import require
    >>> require().__name__
    'PIL.Image'
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("Pillow", "images", what) from exc
    return Image


def _grey(img: np.ndarray) -> np.ndarray:
    """(h, w), (h, w, 1|2|3|4) uint8 or float -> (h, w) float64 in [0, 1]; alpha -> background."""
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.float64)
    elif a.dtype.kind in "ui":
        a = a.astype(np.float64) / (255.0 if a.dtype.itemsize == 1 or a.max(initial=0) <= 255 else 65535.0)
    elif a.dtype.kind == "f":
        a = a.astype(np.float64)
    else:
        raise TypeError(f"image must be a numeric array. Actual dtype: {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        grey, alpha = a, None
    elif a.ndim == 3 and a.shape[2] in (2, 3, 4):
        c = a.shape[2]
        alpha = a[:, :, c - 1] if c in (2, 4) else None
        rgb = a[:, :, :3] if c >= 3 else a[:, :, :1]
        grey = rgb @ np.array([0.299, 0.587, 0.114]) if rgb.shape[2] == 3 else rgb[:, :, 0]
    else:
        raise ValueError(f"image must have shape (h, w) or (h, w, 1|2|3|4 channels). Actual: {a.shape}")
    if not np.all(np.isfinite(grey)):
        raise ValueError("image contains NaN or infinity")
    grey = np.clip(grey, 0.0, 1.0)
    if alpha is not None and alpha.min() < 1.0:
        # transparent pixels are background: put them at the opposite end from the ink
        # (the mean of the opaque pixels tells whether the ink is dark or light)
        opaque = alpha > 0.5
        ink_dark = grey[opaque].mean() < 0.5 if opaque.any() else True
        paper = 1.0 if ink_dark else 0.0
        grey = alpha * grey + (1.0 - alpha) * paper
    return grey


def _border_median(g: np.ndarray) -> float:
    border = np.concatenate([g[0, :], g[-1, :], g[:, 0], g[:, -1]])
    return float(np.median(border))


def to_mnist(image) -> np.ndarray:
    """An image array as one MNIST-style input row (steps in the module docstring).

    Parameters
    ----------
    image : array_like, shape ``(h, w)`` grey or ``(h, w, c)`` with c = 1, 2 (grey +
        alpha), 3 (RGB) or 4 (RGBA); uint8 0..255, uint16, or float in [0, 1]; any size
        of at least 1 x 1.

    Returns
    -------
    numpy.ndarray, shape ``(784,)``, float32 in [0, 1]
        Row-major 28 x 28, light ink on black, ready for ``Network.predict(x[None])``.

    Raises
    ------
    ValueError
        Wrong shape, NaN, or an image with no ink at all (one flat colour).

    Example
    -------
    >>> import numpy as np
    >>> from fastnet.images import to_mnist
    >>> img = np.full((100, 60), 255, np.uint8)      # white paper ...
    >>> img[10:90, 25:35] = 0                         # ... with a black vertical bar
    >>> x = to_mnist(img).reshape(28, 28)
    >>> x.shape, x.dtype, float(x.max()), float(x[0, 0])
    ((28, 28), dtype('float32'), 1.0, 0.0)
    >>> rows = np.nonzero(x.max(axis=1) > 0.5)[0]; int(rows.min()), int(rows.max())
    (5, 24)
    """
    g = _grey(image)
    if g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"image is empty. Actual shape: {g.shape}")
    bg = _border_median(g)
    if bg > 0.5:  # light paper, dark ink: invert to MNIST's light ink on black
        g = 1.0 - g
        bg = 1.0 - bg
    g = np.clip(g - bg, 0.0, None)
    peak = float(g.max())
    if peak <= 1e-6:
        raise ValueError("image has no ink: every pixel is the background colour")
    g = g / peak
    ink = g > INK_THRESHOLD
    rows = np.nonzero(ink.any(axis=1))[0]
    cols = np.nonzero(ink.any(axis=0))[0]
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # noise outside the ink's box is dropped
    h, w = g.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    # anti-aliased resize of the box to fit BOX x BOX, aspect kept
    small = _resample(h, nh) @ g @ _resample(w, nw).T
    small = np.clip(small, 0.0, None)
    small /= small.max()
    # centre of mass to MNIST's (14, 14) by a whole-pixel shift, as MNIST was made: a
    # sub-pixel shift would blur the strokes, which costs more than the half pixel it gains
    mass = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / mass, (xs * small).sum() / mass
    # half a pixel rounds up, whatever the last bit of the BLAS sums above (a symmetric
    # stroke's centre is a tie that Python's round() would send either way)
    top = min(max(math.floor(SIZE / 2 - cy + 0.5 + 1e-9), 0), SIZE - nh)  # keep all the ink inside the field
    left = min(max(math.floor(SIZE / 2 - cx + 0.5 + 1e-9), 0), SIZE - nw)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + nh, left:left + nw] = small
    return out.reshape(-1)


def _lanczos3(x):
    x = np.abs(x)
    return np.where(x < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


def _resample(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` resampling matrix along one axis: output pixel i covers source
    ``[i * step, (i + 1) * step)``, ``step = n_in / n_out`` (pixel i spans [i, i + 1)),
    weighted by a Lanczos-3 kernel widened by ``step`` when shrinking (anti-aliasing, as
    Pillow does). Source pixels outside ``0 .. n_in-1`` are background (0): the weights
    are normalised over the whole kernel, not just the part that falls on the image."""
    step = n_in / n_out
    scale = max(step, 1.0)
    support = 3.0 * scale
    M = np.zeros((n_out, n_in))
    for i in range(n_out):
        c = (i + 0.5) * step  # the output pixel's centre, in source coordinates
        lo, hi = int(np.floor(c - support)), int(np.ceil(c + support))
        j = np.arange(lo, hi + 1)
        wts = _lanczos3((j + 0.5 - c) / scale)
        total = wts.sum()
        keep = (j >= 0) & (j < n_in)
        if total > 0 and keep.any():
            M[i, j[keep]] = wts[keep] / total
    return M


def load_image(path) -> np.ndarray:
    """Read a PNG/JPEG (or any format Pillow reads) as an MNIST-style row via :func:`to_mnist`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray, shape ``(784,)``, float32 in [0, 1]

    Raises
    ------
    fastnet.plot.MissingExtraError
        Pillow is not installed (``pip install "fastnet[images]"``).
    FileNotFoundError
        No such file.
    ValueError
        Not an image Pillow can read, or an image with no ink; the message names the file.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from PIL import Image
    >>> from fastnet.images import load_image
    >>> rgb = np.full((64, 64, 3), (250, 240, 220), np.uint8)   # cream paper
    >>> rgb[12:52, 28:36] = (20, 20, 120)                        # a dark blue stroke
    >>> with tempfile.TemporaryDirectory() as d:
    ...     Image.fromarray(rgb).save(os.path.join(d, "one.png"))
    ...     x = load_image(os.path.join(d, "one.png"))
    >>> x.shape, x.dtype, round(float(x.max()), 3)
    ((784,), dtype('float32'), 1.0)
    """
    Image = require("reading images")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such image file")
    import warnings

    try:
        # MAX_PIXELS (under Pillow's ~89 Mpx warning, which is silenced) is checked on the
        # header, before any decoding; Pillow's own error (above ~179 Mpx) becomes one line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ValueError(f"{path}: the image is {w} x {h} pixels ({w * h / 1e6:,.0f} Mpx), more than "
                                     f"fastnet decodes ({MAX_PIXELS / 1e6:.0f} Mpx); fix: scale it down")
                im.load()
                mode = im.mode
                full_scale = 65535.0 if mode.startswith("I") else 255.0
                if mode in ("P", "PA"):
                    im = im.convert("RGBA")
                elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    im = im.convert("F")
                elif mode == "CMYK" or mode == "YCbCr" or mode == "LAB" or mode == "HSV":
                    im = im.convert("RGB")
                elif mode == "1":
                    im = im.convert("L")
                arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path}: the image is larger than fastnet decodes ({MAX_PIXELS / 1e6:.0f} Mpx; "
                         f"Pillow: {' '.join(str(exc).split())[:90]}); fix: scale it down") from None
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not an image Pillow can read (PNG, JPEG, ...): {' '.join(str(exc).split())}") from exc
    if arr.dtype.kind == "f":  # 16/32-bit grey from convert("F"): rescale to [0, 1]
        arr = arr / full_scale
    try:
        return to_mnist(arr)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_images(paths) -> np.ndarray:
    """:func:`load_image` for each path, stacked: ``(n, 784)`` float32 in [0, 1].

    >>> from fastnet.images import load_images
    >>> load_images([]).shape
    (0, 784)
    """
    rows = [load_image(p) for p in paths]
    return np.stack(rows) if rows else np.zeros((0, SIZE * SIZE), dtype=np.float32)
