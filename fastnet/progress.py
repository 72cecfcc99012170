"""Progress reporting for training and downloads: a tqdm bar on a terminal, lines elsewhere.

The bar is drawn on stderr, and only when both stdout and stderr are terminals (so
``fastnet train > log.txt`` and pipes get plain lines, never carriage returns) and
progress has not been switched off (``fastnet train --quiet`` or :func:`set_enabled`).

:class:`ProgressBar` is what ``Network.fit`` and ``fastnet train`` use. It has two
modes, picked by what it is told:

* per step: ``start_epoch(epoch, n_steps)``, then ``update(steps_done)`` after each
  minibatch, then ``end_epoch(record)``; the bar shows the steps of the current epoch;
* per epoch: only ``end_epoch(record)`` (or the instance used as a ``fit`` callback,
  ``cb(network, record)``); the bar shows epochs done out of the total.

Either way ``end_epoch`` also prints the one-line epoch summary
(:meth:`fastnet.history.History.format_line`) to stdout, above the bar.

``update`` is called once per minibatch, so it is one integer comparison on most calls:
the bar is redrawn at most ``1 / mininterval`` times a second (4 by default), and the
clock is read only every ``stride`` steps, a stride re-estimated from the step rate so
that reads happen about twice per ``mininterval``. ``bench/bench_progress.py`` measures the
cost against a minibatch-10 epoch.
"""
from __future__ import annotations

import sys
import time

__all__ = ["NullProgress", "ProgressBar", "download_bar", "enabled", "for_fit", "is_terminal", "set_enabled"]

_ENABLED = True
_NEVER = 1 << 62  # a step count update() never reaches (an int: int < int is the fastest compare)


def set_enabled(on: bool) -> bool:
    """Switch every progress bar of this process on or off; returns the previous setting.

    ``fastnet train --quiet`` calls ``set_enabled(False)``. Epoch lines are not affected.

    >>> from fastnet import progress
    >>> old = progress.set_enabled(False)
    >>> progress.enabled()
    False
    >>> progress.set_enabled(old)
    False
    """
    global _ENABLED
    old, _ENABLED = _ENABLED, bool(on)
    return old


def is_terminal(stream) -> bool:
    """Whether ``stream`` (a file object) is an interactive terminal; False when it cannot say.

    >>> import io
    >>> from fastnet.progress import is_terminal
    >>> is_terminal(io.StringIO())
    False
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def enabled() -> bool:
    """True when a bar would be drawn now: progress is on and stdout and stderr are terminals.

    >>> from fastnet.progress import enabled
    >>> enabled() in (True, False)
    True
    """
    return _ENABLED and is_terminal(sys.stdout) and is_terminal(sys.stderr)


def download_bar(total, name):
    """A tqdm byte bar for downloading ``name`` (``total`` bytes, or None when unknown).

    Returns None when :func:`enabled` is False or tqdm is missing; the caller then draws
    nothing. The bar must be closed by the caller.

    >>> from fastnet.progress import download_bar, set_enabled
    >>> old = set_enabled(False)
    >>> download_bar(1000, "train-images-idx3-ubyte.gz") is None
    True
    >>> _ = set_enabled(old)
    """
    if not enabled():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False,
                file=sys.stderr, mininterval=0.25)


class NullProgress:
    """The do-nothing progress reporter (``fit(..., verbose=0)``); same methods as ProgressBar.

    >>> from fastnet.progress import NullProgress
    >>> p = NullProgress()
    >>> p.start_epoch(1, 800); p.update(1); p.end_epoch({"epoch": 1}); p.close()
    """

    def start_epoch(self, epoch: int, n_steps: int) -> None:
        """Ignore."""

    def update(self, steps_done: int) -> None:
        """Ignore."""

    def end_epoch(self, record: dict) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""

    def bind(self, history) -> None:
        """Ignore."""


class ProgressBar:
    """Per-epoch lines on stdout and, on a terminal, a tqdm bar on stderr.

    Parameters
    ----------
    epochs : int
        Total number of epochs (the bar's total in per-epoch mode; shown as ``Epoch e/E``).
    lines : bool
        Print the one-line summary of each epoch to stdout (default True).
    bar : bool or None
        Draw the bar: None (default) decides by :func:`enabled` (terminal and not switched
        off); True forces it (to ``file``), False never.
    history : fastnet.History or None
        Supplies the configuration (``n_train``, ``n_val``) the epoch lines are formatted
        with (``Epoch 3: 1848 / 2000 ...``); ``Network.fit`` binds its own.
    file : file object or None
        Where the bar is drawn (default ``sys.stderr``).
    out : file object or None
        Where the epoch lines go (default ``sys.stdout``).
    mininterval : float
        Smallest time in seconds between two redraws of the bar (default 0.25).

    The instance is also a ``fit`` callback: ``bar(network, record)`` is
    ``bar.end_epoch(record)``, and an epoch already ended is not ended twice, so it can be
    given to ``fit`` both as the progress reporter and in ``callbacks``.

    Example
    -------
    >>> import io
    >>> from fastnet.progress import ProgressBar
    >>> out = io.StringIO()
    >>> bar = ProgressBar(2, bar=False, out=out)
    >>> bar.start_epoch(1, n_steps=800)
    >>> for step in range(1, 801):
    ...     bar.update(step)
    >>> bar.end_epoch({"epoch": 1, "loss": 0.25, "accuracy": 0.5, "seconds": 0.5,
    ...                "samples_per_s": 16000.0})
    >>> print(out.getvalue(), end="")
    Epoch 1: train acc 0.5000  train loss 0.2500  0.50 s  16,000 samples/s
    """

    def __init__(self, epochs: int, *, lines: bool = True, bar: bool | None = None, history=None,
                 file=None, out=None, mininterval: float = 0.25):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1. Actual: {epochs!r}")
        self.epochs = epochs
        self.lines = bool(lines)
        self.history = history
        self.file = file
        self.out = out
        self.mininterval = float(mininterval)
        self._want_bar = enabled() if bar is None else bool(bar)
        self._tqdm = None
        self._per_step = False
        self._epochs_done = 0
        self._last_ended = None
        # update() throttle: the next step count at which the clock is read
        self._next = _NEVER
        self._stride = 1
        self._t_check = 0.0
        self._s_check = 0
        self._t_draw = 0.0
        self._closed = False

    # --- the bar ------------------------------------------------------------------------

    def open(self) -> None:
        """Show the bar now (``epochs done / total`` until a ``start_epoch``). Optional: the
        first ``start_epoch`` or ``end_epoch`` opens it; creating a ProgressBar draws nothing,
        so it can be made before the arguments of a run are all checked."""
        if self._tqdm is not None or self._closed or not self._want_bar:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is a core dependency; without it: lines only
            self._want_bar = False
            return
        self._tqdm = tqdm(total=self.epochs, desc="epochs", unit="epoch", leave=False, dynamic_ncols=True,
                          file=self.file if self.file is not None else sys.stderr,
                          mininterval=self.mininterval, miniters=0)

    @property
    def drawing(self) -> bool:
        """True while a tqdm bar is shown."""
        return self._tqdm is not None

    @property
    def wants_bar(self) -> bool:
        """True when this reporter draws a bar once opened (a terminal, or ``bar=True``)."""
        return self._want_bar

    def bind(self, history) -> None:
        """Format epoch lines with ``history``'s configuration (``fit`` passes its History)."""
        self.history = history

    def start_epoch(self, epoch: int, n_steps: int) -> None:
        """An epoch of ``n_steps`` minibatches begins: the bar counts its steps from 0."""
        self._per_step = True
        self._epoch = epoch
        self.open()
        if self._tqdm is None:
            return
        self._tqdm.unit = "step"
        self._tqdm.set_description_str(f"Epoch {epoch}/{self.epochs}", refresh=False)
        self._tqdm.reset(total=n_steps)  # redraws, so the labels are set first
        now = time.perf_counter()
        self._t_check = self._t_draw = now
        self._s_check = 0
        self._next = self._stride  # keep the stride learned in the previous epoch

    def update(self, steps_done: int) -> None:
        """``steps_done`` minibatches of this epoch are finished (call after every step).

        Costs one comparison except every ``stride`` steps, when it reads the clock and
        redraws if ``mininterval`` has passed.
        """
        if steps_done < self._next:
            return
        self._check(steps_done)

    def _check(self, steps_done: int) -> None:
        now = time.perf_counter()
        dt = now - self._t_check
        ds = steps_done - self._s_check
        if dt > 0 and ds > 0:  # re-estimate the stride from the step rate: 2 reads per mininterval
            self._stride = max(1, int(ds / dt * self.mininterval / 2))
        self._t_check, self._s_check = now, steps_done
        self._next = steps_done + self._stride
        if now - self._t_draw >= self.mininterval:
            self._t_draw = now
            self._tqdm.n = steps_done
            self._tqdm.refresh()

    def end_epoch(self, record: dict) -> None:
        """The epoch of ``record`` is over: print its line and advance (or finish) the bar."""
        epoch = record.get("epoch")
        if epoch is not None and epoch == self._last_ended:
            return  # already ended (the same bar given to fit and to its callbacks)
        self._last_ended = epoch
        # a resumed run starts past epoch 1: count by the record's epoch number when it has one
        self._epochs_done = epoch if isinstance(epoch, int) else self._epochs_done + 1
        self._next = _NEVER
        self.open()
        if self._tqdm is not None:
            if self._per_step:
                self._tqdm.n = self._tqdm.total or self._tqdm.n
            else:
                self._tqdm.n = min(self._epochs_done, self.epochs)
        if self.lines:
            self._write(self._format(record))  # clears the bar, prints the line
        if self._tqdm is not None:
            self._tqdm.refresh()
        if self._epochs_done >= self.epochs:
            self.close()

    def __call__(self, network, record: dict) -> None:
        """``fit`` callback form: ``cb(network, record)`` -> :meth:`end_epoch` (a stack's
        list of K records: nothing, its fit already showed the summary record)."""
        if isinstance(record, dict):
            self.end_epoch(record)

    def close(self) -> None:
        """Remove the bar for good (idempotent). Lines already printed stay."""
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        self._next = _NEVER

    def _format(self, record: dict) -> str:
        if self.history is not None and hasattr(self.history, "format_line"):
            return self.history.format_line(record)
        from fastnet.history import History

        return History().format_line(record)

    def _write(self, line: str) -> None:
        out = self.out if self.out is not None else sys.stdout
        if self._tqdm is not None:
            from tqdm import tqdm

            tqdm.write(line, file=out)  # clears the bar, prints, redraws it
            out.flush()
        else:
            print(line, file=out, flush=True)


def for_fit(verbose, epochs: int, history=None, callbacks=()):
    """The progress reporter ``Network.fit`` drives, from its ``verbose`` and ``callbacks``.

    * a :class:`ProgressBar` among ``callbacks`` wins (``fastnet train`` passes one): it
      gets the per-step calls too, and its callback call is then a no-op;
    * ``verbose=0``: :class:`NullProgress`, nothing printed;
    * ``verbose=1``: a bar on a terminal plus one line per epoch (just the lines elsewhere);
    * ``verbose=2``: one line per epoch, never a bar (Keras's meaning of 0/1/2).

    ``history`` (the History being filled) formats the epoch lines.

    >>> from fastnet.progress import for_fit
    >>> type(for_fit(0, 5)).__name__, type(for_fit(2, 5)).__name__, for_fit(2, 5).wants_bar
    ('NullProgress', 'ProgressBar', False)
    """
    for cb in callbacks:
        if isinstance(cb, ProgressBar):
            if history is not None:
                cb.bind(history)
            return cb
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch). "
                         f"Actual: {verbose!r}")
    if verbose == 0:
        return NullProgress()
    return ProgressBar(epochs, lines=True, bar=None if verbose == 1 else False, history=history)
