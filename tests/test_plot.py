"""fastnet.plot: learning curves, weight tiles, confusion matrix (PNG files checked by decoding)."""
import numpy as np
import pytest

import fastnet
from fastnet import plot

pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("PIL.Image", reason="Pillow is in the dev extra: pip install -e '.[dev]'")
from PIL import Image  # noqa: E402


def decoded(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def records(n, val=True):
    out = []
    for i in range(1, n + 1):
        r = {"epoch": i, "loss": 0.3 / i, "accuracy": 1 - 0.3 / i, "seconds": 0.1, "samples_per_s": 8e4}
        if val:
            r |= {"val_loss": 0.35 / i, "val_accuracy": 1 - 0.35 / i}
        out.append(r)
    return out


@pytest.mark.parametrize("val", [True, False])
def test_plot_history_panels_lines_and_png(tmp_path, val):
    h = fastnet.History(records(4, val), config={"sizes": [784, 30, 10], "cost": "quadratic", "eta": 3.0,
                                                 "batch_size": 10, "backend": "numpy"})
    fig = plot.plot_history(h, tmp_path / "c.png")
    loss_ax, acc_ax = fig.axes
    assert [loss_ax.get_title(), acc_ax.get_title()] == ["loss", "accuracy"]
    assert len(loss_ax.lines) == (2 if val else 1) and len(acc_ax.lines) == (2 if val else 1)
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([r["loss"] for r in h])
    assert list(acc_ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    if val:
        assert list(acc_ax.lines[1].get_ydata()) == pytest.approx(h["val_accuracy"])
    assert "[784, 30, 10] quadratic" in fig.texts[0].get_text()
    px = decoded(tmp_path / "c.png")
    assert px.shape == (plot.CURVES_SIZE[1], plot.CURVES_SIZE[0], 3)
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20, "something is drawn, not a blank page"


def test_plot_history_reads_a_history_file(tmp_path):
    fastnet.History(records(3)).save(tmp_path / "h.json")
    fig = plot.plot_history(tmp_path / "h.json")
    assert len(fig.axes[0].lines) == 2


def test_plot_history_refuses_empty_and_malformed(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        plot.plot_history(fastnet.History())
    with pytest.raises(ValueError, match="'loss' and 'accuracy'"):
        plot.plot_history([{"epoch": 1}])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot.plot_history(records(2), tmp_path / "nope" / "c.png")


def test_plot_weights_tiles_are_the_columns(tmp_path):
    W = np.zeros((784, 7))
    W[:, 3] = np.arange(784) / 784.0
    fig = plot.plot_weights(W, tmp_path / "w.png")
    tiles = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(tiles) == 7
    assert np.array_equal(tiles[3].images[0].get_array(), W[:, 3].reshape(28, 28))
    rows, cols = plot.weights_grid(7)
    assert (rows, cols) == (3, 3)
    px = decoded(tmp_path / "w.png")
    assert px.shape[1] == plot.WEIGHTS_WIDTH
    net = fastnet.Network([784, 12, 10], device="cpu", seed=0)
    assert len([ax for ax in plot.plot_weights(net, max_tiles=5).axes if ax.images]) == 5


@pytest.mark.parametrize("W, fragment", [
    (np.zeros((100, 5)), r"shape \(784, n_hidden\)"),
    (np.full((784, 3), np.nan), "NaN"),
])
def test_plot_weights_refuses(W, fragment):
    with pytest.raises(ValueError, match=fragment):
        plot.plot_weights(W)


def test_confusion_matrix_counts():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 500)
    p = np.where(rng.random(500) < 0.8, t, rng.integers(0, 10, 500))
    cm = plot.confusion_matrix(t, p, 10)
    assert cm.shape == (10, 10) and cm.dtype == np.int64 and cm.sum() == 500
    assert np.trace(cm) == np.sum(t == p)
    for i, j in [(0, 0), (3, 5), (9, 2)]:
        assert cm[i, j] == np.sum((t == i) & (p == j))
    assert plot.confusion_matrix([1], [1]).tolist() == [[0, 0], [0, 1]]
    with pytest.raises(ValueError, match="same length"):
        plot.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="class ids"):
        plot.confusion_matrix([0, 5], [0, 1], 3)


def test_plot_confusion_png(tmp_path):
    cm = np.diag([50, 40, 30]) + 1
    fig = plot.plot_confusion(cm, tmp_path / "cm.png", labels=["a", "b", "c"])
    ax = fig.axes[0]
    assert ax.get_title() == f"confusion matrix: accuracy {123 / 129:.4f} (n = 129)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(cm.ravel().tolist())
    px = decoded(tmp_path / "cm.png")
    assert px.shape == (plot.CONFUSION_SIZE[1], plot.CONFUSION_SIZE[0], 3)
    with pytest.raises(ValueError, match="square"):
        plot.plot_confusion(np.zeros((2, 3)))


def test_no_pyplot_no_global_backend_change():
    """The library draws on its own Agg canvas: pyplot is never imported and matplotlib.use never
    called, so a user's backend (a notebook's, a GUI's) is left alone."""
    import subprocess
    import sys

    code = ("import sys, os, tempfile; from fastnet import plot; "
            "plot.plot_history([{'loss': 1, 'accuracy': 0.5}], os.path.join(tempfile.mkdtemp(), 'c.png')); "
            "plot.plot_confusion([[1]]); plot.plot_weights(plot.np.ones((784, 2))); "
            "print('matplotlib.pyplot' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False"]
