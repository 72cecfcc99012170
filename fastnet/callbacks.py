"""Callbacks for ``fit``: early stopping.

A callback is called as ``cb(model, record)`` after every epoch; returning ``False``
(Python's or NumPy's) or raising ``StopIteration`` ends training after that epoch, and
``fit`` still returns the History of the epochs that ran.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastnet import _validate as V

#: Metrics where bigger is better; every other monitored value is minimised.
_MAXIMISED = ("accuracy", "val_accuracy")
#: What ``monitor`` may name: the first two always, the last two with validation data.
_MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")


class EarlyStopping:
    """Stop when the monitored figure has not improved for ``patience`` epochs.

    monitor: a record key (``"val_accuracy"``, ``"val_loss"``, ``"accuracy"``, ``"loss"``);
    None picks ``"val_accuracy"`` when the fit has validation data, else ``"loss"``.
    An epoch improves when it beats the best so far by more than ``min_delta``.
    restore_best: at the end of ``fit``, put back the weights of the best epoch.

    After ``fit``: ``best_epoch``, ``best`` (its value) and ``stopped_epoch`` (0 when
    training ran all its epochs); ``fit`` copies them into ``History.config``.

    >>> import numpy as np, fastnet
    >>> net = fastnet.Network([2, 2], device="cpu", seed=0)
    >>> stop = fastnet.EarlyStopping(patience=1, min_delta=1.0)   # nothing beats +1.0
    >>> h = net.fit(np.eye(2), np.array([0, 1]), epochs=50, batch_size=1, eta=1.0, early_stopping=stop)
    >>> len(h), stop.best_epoch, stop.stopped_epoch
    (2, 1, 2)
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, restore_best: bool = True, monitor=None):
        self.patience = V.check_positive_int("patience", patience)
        self.min_delta = V.check_real("min_delta", min_delta)
        self.restore_best = V.check_bool("restore_best", restore_best)
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor must be a record key such as 'val_accuracy' or 'loss'. Actual: {monitor!r}")
        self.monitor = monitor
        _check_monitor(monitor, _MONITORS, "")
        self._clear("loss" if monitor is None else monitor)

    def reset(self, has_validation: bool = False) -> None:
        """Forget the last run (``fit`` calls this before anything changes). A ``monitor``
        that the epoch records will not hold is a ``ValueError`` naming the choices: with
        validation data ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, else the first two.

        >>> s = EarlyStopping(); s.reset(has_validation=True); s.key, s.best_epoch
        ('val_accuracy', 0)
        >>> EarlyStopping(monitor="val_loss").reset(has_validation=False)
        Traceback (most recent call last):
        ...
        ValueError: EarlyStopping monitor must be one of 'loss', 'accuracy' (without validation data). Actual: 'val_loss'; fix: pick one of those, or give validation_data or validation_split
        """
        _check_monitor(self.monitor, _MONITORS if has_validation else _MONITORS[:2],
                       " (with validation data)" if has_validation else " (without validation data)")
        self._clear(self.monitor or ("val_accuracy" if has_validation else "loss"))

    def _clear(self, key: str) -> None:
        self.key = key
        self.best = None
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_params = None
        self._wait = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if self.key in _MAXIMISED:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def __call__(self, model, record) -> bool:
        if self.key not in record:
            raise KeyError(f"early stopping monitors {self.key!r}, which the epoch record lacks "
                           f"(it has {sorted(record)}); give validation data or monitor 'loss'")
        value = float(record[self.key])
        if self._better(value):
            self.best, self.best_epoch, self._wait = value, int(record["epoch"]), 0
            if self.restore_best:
                copy = model.backend.copy
                self.best_params = ([copy(w) for w in model.weights], [copy(b) for b in model.biases])
            return True
        self._wait += 1
        if self._wait >= self.patience:
            self.stopped_epoch = int(record["epoch"])
            return False
        return True

    def restore(self, model) -> None:
        """Put the best epoch's weights back into ``model`` (with ``restore_best``; ``fit``
        calls this at its end).

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 2], device="cpu", seed=0)
        >>> s = EarlyStopping(patience=1); s.reset()
        >>> s(net, {"epoch": 1, "loss": 0.5}), s(net, {"epoch": 2, "loss": 0.9})
        (True, False)
        >>> net.weights = [np.zeros((2, 2))]; s.restore(net); bool(net.weights[0].any())
        True
        """
        if self.restore_best and self.best_params is not None:
            model.weights, model.biases = self.best_params

    def settings(self) -> dict:
        """What decides this stopper's result (after :meth:`reset`): a checkpoint records it
        and a resume must match it.

        >>> s = EarlyStopping(patience=3); s.reset(); s.settings()
        {'patience': 3, 'min_delta': 0.0, 'monitor': 'loss', 'restore_best': True}
        """
        return {"patience": self.patience, "min_delta": self.min_delta, "monitor": self.key,
                "restore_best": self.restore_best}

    def state(self) -> dict:
        """Where the run stands (JSON-ready): ``best``, ``best_epoch``, ``wait`` (epochs
        without improvement), ``stopped_epoch`` and ``best_params`` (whether best weights
        are held: :attr:`best_params`, saved beside the checkpoint's own). A checkpoint
        keeps it, so that a resumed run stops where an uninterrupted one did.

        >>> s = EarlyStopping(); s.reset(); s.state()
        {'best': None, 'best_epoch': 0, 'wait': 0, 'stopped_epoch': 0, 'best_params': False}
        """
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self._wait,
                "stopped_epoch": self.stopped_epoch, "best_params": self.best_params is not None}

    def set_state(self, state: dict, best_params=None) -> None:
        """Go on from a :meth:`state` (a checkpoint's, already checked); ``best_params`` is
        ``(weights, biases)`` on the model's device when ``state["best_params"]``.

        >>> s = EarlyStopping(); s.reset()
        >>> s.set_state({"best": 0.5, "best_epoch": 2, "wait": 1, "stopped_epoch": 0, "best_params": False})
        >>> s.best_epoch, s(None, {"epoch": 4, "loss": 0.6})
        (2, True)
        """
        self.best, self.best_epoch, self._wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_params = best_params if state["best_params"] else None

    def summary(self) -> dict:
        """What ``fit`` writes into ``History.config["early_stopping"]``.

        >>> EarlyStopping().summary()["stopped_epoch"]
        0
        """
        return {"monitor": self.key, "best_epoch": self.best_epoch, "best": self.best,
                "stopped_epoch": self.stopped_epoch, "restored_best": self.restore_best and self.best_params is not None}


def _check_monitor(monitor, choices, where: str) -> None:
    """A ``monitor`` that is None or among ``choices``, else a one-line ``ValueError``."""
    if monitor is not None and monitor not in choices:
        fix = ", or give validation_data or validation_split" if "without" in where else ""
        raise ValueError(f"EarlyStopping monitor must be one of {', '.join(map(repr, choices))}{where}. "
                         f"Actual: {monitor!r}; fix: pick one of those{fix}")


def as_early_stopping(value):
    """``fit``'s ``early_stopping=``: None/False (off), True (defaults), an int (patience),
    a dict of :class:`EarlyStopping` keywords, or an :class:`EarlyStopping`."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):   # NumPy's bools too (np.True_ is not an int here)
        return EarlyStopping() if value else None
    if isinstance(value, EarlyStopping):
        return value
    if isinstance(value, numbers.Integral):
        return EarlyStopping(patience=value)
    if isinstance(value, dict):
        try:
            return EarlyStopping(**value)
        except TypeError as e:
            raise TypeError(f"early_stopping: {e}; keys are patience, min_delta, restore_best, monitor") from None
    raise TypeError("early_stopping must be True, a patience (int), a dict of EarlyStopping keywords or "
                    f"a fastnet.EarlyStopping. Actual: {value!r}")
