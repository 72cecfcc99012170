"""Loading a saved model: the one place that knows both the file format and the models.

:mod:`fastnet.io` reads and verifies files and never imports a model; this module sits
above both and builds the :class:`fastnet.Network` or :class:`fastnet.NetworkStack` a
file describes (``fastnet.load``).
"""
from __future__ import annotations

import os
import warnings

from fastnet.io import nonfinite, read_model
from fastnet.network import Network
from fastnet.stack import NetworkStack

__all__ = ["load"]


def load(path, *, device="auto"):
    """Load a network saved with :meth:`fastnet.Network.save` onto ``device`` (a stack's
    checkpoint loads as a :class:`fastnet.NetworkStack`).

    A model whose weights are not finite (saved after training diverged with
    ``on_divergence="continue"``) loads with a ``RuntimeWarning`` so that it can be
    inspected; its ``diverged`` is True.

    >>> import fastnet, tempfile, os
    >>> net = fastnet.Network([3, 2], device="cpu", seed=1)
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npz"); net.save(p)
    >>> fastnet.load(p, device="cpu").sizes
    [3, 2]
    """
    meta, weights, biases = read_model(path)
    bad = nonfinite(weights, biases)
    if bad:
        warnings.warn(f"{os.fsdecode(os.fspath(path))}: the weights are not finite (NaN or inf in "
                      f"{', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}): training diverged before it was "
                      "saved; loaded for inspection, its outputs are meaningless", RuntimeWarning, stacklevel=2)
    if meta.get("k") is not None:
        stack = NetworkStack(meta["sizes"], seeds=meta["seeds"], etas=meta["etas"], lmbdas=meta["lmbdas"],
                             activation=meta.get("activation", "sigmoid"), cost=meta["cost"], init=meta["init"], dtype=meta["dtype"], device=device,
                             order=meta["order"],
                             order_seed=meta["order_seed"] if meta["order"] == "shared" else None)
        stack._set_params(weights, biases)
        return stack
    net = Network(meta["sizes"], activation=meta.get("activation", "sigmoid"), cost=meta["cost"],
                  init=meta.get("init", "nielsen"), dtype=meta["dtype"], device=device, seed=meta.get("seed"))
    net._set_params(weights, biases)
    return net
