"""fastnet.progress: when a bar is drawn, what it prints, how often it redraws."""
import io
import time

import numpy as np
import pytest

import fastnet
from fastnet import progress
from fastnet.progress import NullProgress, ProgressBar, for_fit

REC = {"epoch": 1, "loss": 0.25, "accuracy": 0.5, "seconds": 0.5, "samples_per_s": 16000.0}


@pytest.fixture(autouse=True)
def _restore_enabled():
    old = progress.set_enabled(True)
    yield
    progress.set_enabled(old)


def test_no_bar_when_not_a_terminal_or_switched_off(monkeypatch):
    # under pytest stdout is captured: not a terminal
    assert not progress.enabled() and not ProgressBar(3).wants_bar
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    err = io.StringIO()
    bar = ProgressBar(3, file=err)
    assert progress.enabled() and bar.wants_bar and not bar.drawing and err.getvalue() == "", "drawn when used"
    bar.open()
    assert bar.drawing and "0/3" in err.getvalue()
    bar.close()
    bar.open()
    assert not bar.drawing, "closed for good"
    progress.set_enabled(False)
    assert not progress.enabled() and not ProgressBar(3).wants_bar
    assert progress.download_bar(10, "x") is None


def test_download_bar_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    bar = progress.download_bar(2048, "t10k-images-idx3-ubyte.gz")
    bar.update(1024)
    bar.close()
    assert "t10k-images-idx3-ubyte.gz" in progress.sys.stderr.getvalue()


def test_per_epoch_mode_as_a_fit_callback():
    X = np.eye(4, dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    out, err = io.StringIO(), io.StringIO()
    bar = ProgressBar(3, bar=True, file=err, out=out, mininterval=0,
                      history=fastnet.History(config={"n_val": 4}))  # formats "k / 4"
    net = fastnet.Network([4, 3, 2], device="cpu", seed=0)
    hist = net.fit(X, y, epochs=3, batch_size=2, eta=1.0, validation_data=(X, y), callbacks=[bar])
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 1", "Epoch 2", "Epoch 3"]
    assert all("/ 4" in line for line in lines), "scored on the 4 validation samples"
    assert lines[-1] == hist.format_line(hist[-1])
    assert "epochs" in err.getvalue() and "3/3" in err.getvalue()
    assert not bar.drawing, "closed after the last epoch"


def test_per_step_mode_and_throttled_redraws():
    out, err = io.StringIO(), io.StringIO()
    bar = ProgressBar(2, bar=True, file=err, out=out, mininterval=0.25)
    bar.open()
    draws = []
    orig = bar._tqdm.refresh
    bar._tqdm.refresh = lambda *a, **k: (draws.append(bar._tqdm.n), orig(*a, **k))
    for epoch in (1, 2):
        bar.start_epoch(epoch, 100_000)
        t0 = time.perf_counter()
        for step in range(1, 100_001):
            bar.update(step)
        elapsed = time.perf_counter() - t0
        bar.end_epoch(dict(REC, epoch=epoch))
    # at most one redraw per mininterval (plus the first), however many steps
    assert len(draws) <= 2 * (elapsed / 0.25 + 2) + 4, draws
    text = err.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "100000/100000" in text and "step" in text
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["Epoch 1", "Epoch 2"]


def test_slow_steps_are_redrawn():
    err = io.StringIO()
    bar = ProgressBar(1, bar=True, file=err, out=io.StringIO(), mininterval=0.02)
    bar.start_epoch(1, 20)
    for step in range(1, 21):
        time.sleep(0.005)
        bar.update(step)
    assert any(f"{k}/20" in err.getvalue() for k in range(4, 20)), "intermediate steps shown"
    bar.close()


def test_an_epoch_is_ended_once():
    out = io.StringIO()
    bar = ProgressBar(2, bar=False, out=out)
    bar.end_epoch(REC)
    bar(None, REC)  # the same bar as fit's reporter and in its callbacks
    assert len(out.getvalue().splitlines()) == 1


def test_for_fit_chooses_by_verbose_and_callbacks(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    assert isinstance(for_fit(0, 3), NullProgress)
    b1 = for_fit(1, 3)
    assert isinstance(b1, ProgressBar) and b1.wants_bar and b1.lines
    b1.close()
    b2 = for_fit(2, 3)
    assert isinstance(b2, ProgressBar) and not b2.wants_bar and b2.lines
    mine = ProgressBar(3, bar=False)
    h = fastnet.History(config={"n_val": 10})
    assert for_fit(0, 3, h, [print, mine]) is mine and mine.history is h
    for bad in (3, -1, True, "1"):
        with pytest.raises(ValueError, match="verbose must be 0"):
            for_fit(bad, 3)
    with pytest.raises(ValueError, match="epochs must be"):
        ProgressBar(0)


def test_null_progress_accepts_everything():
    p = NullProgress()
    p.bind(None)
    p.start_epoch(1, 10)
    p.update(3)
    p.end_epoch(REC)
    p.close()
