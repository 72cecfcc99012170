"""Pictures: learning curves, first-layer weights as 28 x 28 tiles, a confusion matrix.

Drawing needs matplotlib, an optional extra: ``pip install "fastnet[plot]"``. Without it
the drawing functions raise :class:`MissingExtraError` naming the extra;
:func:`confusion_matrix` is plain NumPy and always works.

Figures are made with ``matplotlib.figure.Figure`` on the Agg canvas, never through
``pyplot``: nothing here changes matplotlib's global backend or opens a window, so the
functions are safe in scripts, servers and notebooks alike. Each ``plot_*`` function
returns the Figure and, given ``path``, writes a PNG of exactly ``size`` pixels.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["CURVES_SIZE", "CONFUSION_SIZE", "WEIGHTS_WIDTH", "MissingExtraError", "confusion_matrix",
           "plot_confusion", "plot_history", "plot_weights", "require", "weights_grid"]

#: Pixel size (width, height) of :func:`plot_history`'s picture.
CURVES_SIZE = (1200, 500)
#: Pixel size (width, height) of :func:`plot_confusion`'s picture.
CONFUSION_SIZE = (800, 720)
#: Pixel width of :func:`plot_weights`'s picture (its height follows the tile grid).
WEIGHTS_WIDTH = 1000
_DPI = 100


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it.

    >>> from fastnet.plot import MissingExtraError
    >>> str(MissingExtraError("matplotlib", "plot", "drawing"))
    'drawing needs matplotlib, which is not installed. Fix: pip install "fastnet[plot]"'
    """

    def __init__(self, module: str, extra: str, what: str):
        super().__init__(f'{what} needs {module}, which is not installed. Fix: pip install "fastnet[{extra}]"')
        self.module, self.extra = module, extra


def require(what: str = "drawing"):
    """Import matplotlib (its Agg canvas) or raise :class:`MissingExtraError` naming ``fastnet[plot]``.

    Returns the ``matplotlib`` module.

    >>> from fastnet.plot import require
    >>> require().__name__
    'matplotlib'
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "plot", what) from exc
    return matplotlib


def _figure(size):
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    """Write ``fig`` as PNG at its own size (no tight bbox: the pixel size is the one asked for)."""
    if path is None:
        return
    from fastnet.io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, dpi=_DPI, format="png"), "picture")


def _history_records(history) -> list[dict]:
    from fastnet.history import History

    if isinstance(history, (str, os.PathLike)):
        history = History.load(history)
    records = list(history.records if isinstance(history, History) else history)
    if not records:
        raise ValueError("the history has no epochs to plot")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "loss" not in r or "accuracy" not in r:
            raise ValueError(f"history epoch record {i} must be a dict with 'loss' and 'accuracy'. Actual: {r!r}")
    return records


def plot_history(history, path=None, *, title=None, size=CURVES_SIZE):
    """Loss and accuracy per epoch, training and (when recorded) validation, side by side.

    Parameters
    ----------
    history : fastnet.History, list of epoch dicts, or a path to a ``--history`` JSON file
        Each record needs ``loss`` and ``accuracy``; ``val_loss`` / ``val_accuracy`` are
        drawn when present; ``epoch`` is the x axis (1, 2, ... when absent).
    path : str or os.PathLike, optional
        Write a PNG of ``size`` pixels here.
    title : str, optional
        Figure title (default: the network and recipe from the history's config).
    size : (int, int)
        Width and height in pixels (default :data:`CURVES_SIZE`, 1200 x 500).

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> import os, tempfile
    >>> from fastnet.plot import plot_history
    >>> recs = [{"epoch": 1, "loss": 0.20, "accuracy": 0.80, "val_loss": 0.21, "val_accuracy": 0.79},
    ...         {"epoch": 2, "loss": 0.10, "accuracy": 0.90, "val_loss": 0.12, "val_accuracy": 0.88}]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot_history(recs, os.path.join(d, "curves.png"))
    ...     os.path.getsize(os.path.join(d, "curves.png")) > 0
    True
    >>> [ax.get_title() for ax in fig.axes]
    ['loss', 'accuracy']
    """
    config = getattr(history, "config", None)
    if isinstance(history, (str, os.PathLike)):
        from fastnet.history import History

        history = History.load(history)
        config = history.config
    records = _history_records(history)
    fig = _figure(size)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in records], "o-", color="tab:blue", label=f"training {label}")
        val = [r.get("val_" + key) for r in records]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], "s-", color="tab:orange",
                    label=f"validation {label}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    ax_acc.set_ylabel("fraction correct")
    ax_loss.set_ylabel("mean cost")
    if title is None and config:
        title = (f"{config.get('sizes', '')} {config.get('cost', '')}, batch {config.get('batch_size', '?')}, "
                 f"eta {config.get('eta', '?')}, {config.get('backend', '')}").strip()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def weights_grid(n_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid :func:`plot_weights` uses for ``n_tiles`` tiles.

    >>> from fastnet.plot import weights_grid
    >>> weights_grid(30), weights_grid(100), weights_grid(1)
    ((5, 6), (10, 10), (1, 1))
    """
    cols = math.ceil(math.sqrt(n_tiles))
    return math.ceil(n_tiles / cols), cols


def plot_weights(weights, path=None, *, max_tiles=100, title=None, width=WEIGHTS_WIDTH):
    """The first layer's weights as 28 x 28 tiles: one tile per hidden unit.

    Parameters
    ----------
    weights : fastnet.Network or array of shape ``(784, n_hidden)``
        A network (its ``weights[0]`` is used; any device) or the matrix itself. Tile
        ``j`` is column ``j`` reshaped row-major to 28 x 28, the layout of the input pixels.
    path : str or os.PathLike, optional
        Write a PNG here: ``width`` pixels wide, as tall as the grid needs.
    max_tiles : int
        Draw at most this many hidden units (the first ones).
    title, width
        Figure title; pixel width (default :data:`WEIGHTS_WIDTH`).

    Each tile is coloured on one symmetric scale (red positive, blue negative, white 0)
    shared by all tiles, so tiles compare.

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> import numpy as np
    >>> from fastnet.plot import plot_weights
    >>> fig = plot_weights(np.random.default_rng(0).standard_normal((784, 30)))
    >>> len([ax for ax in fig.axes if ax.images]), tuple(int(v) for v in fig.get_size_inches() * fig.dpi)
    (30, (1000, 793))
    """
    W = weights.weights[0] if hasattr(weights, "weights") else weights
    W = _to_numpy(W)
    if W.ndim != 2 or W.shape[0] != 784:
        raise ValueError(f"first-layer weights must have shape (784, n_hidden) to be drawn as 28 x 28 tiles. "
                         f"Actual: {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("first-layer weights contain NaN or infinity; nothing sensible to draw")
    n = min(W.shape[1], int(max_tiles))
    rows, cols = weights_grid(n)
    tile_px = 0.88 * width / cols  # the tiles get 88 % of the width, the colour bar the rest
    height = int(round(rows * tile_px + 60))  # + 50 px above for the title, 10 below
    fig = _figure((width, height))
    lim = float(np.max(np.abs(W[:, :n]))) or 1.0
    top = 1 - 50 / height
    gs = fig.add_gridspec(rows, cols, left=0.01, right=0.89, bottom=0.01, top=top, wspace=0.05, hspace=0.05)
    im = None
    for j in range(n):
        ax = fig.add_subplot(gs[j // cols, j % cols])
        im = ax.imshow(W[:, j].reshape(28, 28), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(j), fontsize=7, pad=1, loc="left", x=0.02, y=0.98, va="top", color="0.3")
    cax = fig.add_axes([0.91, 0.1, 0.015, top - 0.15])
    fig.colorbar(im, cax=cax, label="weight")
    fig.suptitle(title or f"first-layer weights: {n} of {W.shape[1]} hidden units (28 x 28 input pixels)",
                 y=1 - 15 / height, va="top")
    _save(fig, path)
    return fig


def confusion_matrix(y_true, y_pred, n_classes=None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape ``(n,)``
        Class ids in ``0 .. n_classes-1`` (host or device arrays).
    n_classes : int, optional
        Default: 1 + the largest id seen.

    Returns
    -------
    numpy.ndarray, shape ``(n_classes, n_classes)``, int64
        Rows are true classes; the trace is the number correct.

    Example
    -------
    >>> from fastnet.plot import confusion_matrix
    >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2]).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    t = _to_numpy(y_true).astype(np.int64).ravel()
    p = _to_numpy(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length. Actual: {t.shape[0]} and {p.shape[0]}")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class ids must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def plot_confusion(cm, path=None, *, labels=None, title=None, size=CONFUSION_SIZE):
    """Draw a confusion matrix (rows true class, columns predicted) with its counts.

    Parameters
    ----------
    cm : array_like, shape ``(k, k)``, integer counts
        As returned by :func:`confusion_matrix`.
    path : str or os.PathLike, optional
        Write a PNG of ``size`` pixels here (default :data:`CONFUSION_SIZE`).
    labels : sequence of str, optional
        Class names (default ``0 .. k-1``).
    title : str, optional
        Default: ``"confusion matrix: accuracy 0.9123 (n = 2000)"``.

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> from fastnet.plot import plot_confusion
    >>> fig = plot_confusion([[5, 1], [0, 4]])
    >>> fig.axes[0].get_title()
    'confusion matrix: accuracy 0.9000 (n = 10)'
    """
    cm = np.asarray(_to_numpy(cm))
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"a confusion matrix must be square (k, k). Actual: shape {cm.shape}")
    k = cm.shape[0]
    total = int(cm.sum())
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    # colour by the fraction of each true class, so rare classes' errors show too
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9 if k <= 10 else 6,
                        color="white" if frac[i, j] > 0.5 else "black")
    names = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(cm) / total if total else float("nan")
    ax.set_title(title or f"confusion matrix: accuracy {acc:.4f} (n = {total})")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    _save(fig, path)
    return fig


def _to_numpy(a):
    """Host NumPy view of a NumPy, CuPy or Array API array (or a list)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):  # CuPy
        return a.get()
    return np.asarray(a)
