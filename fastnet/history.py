"""Per-epoch training history: what ``Network.fit`` returns and ``--history`` writes."""
from __future__ import annotations

import json
from pathlib import Path


class History:
    """Records of a training run, one dict per epoch, plus the run's configuration.

    Each record has ``epoch``, ``loss``, ``accuracy`` (on the training data, after the
    epoch), ``seconds``, ``samples_per_s`` and, with validation data, ``val_loss`` and
    ``val_accuracy``.

    >>> h = History(config={"eta": 3.0})
    >>> h.append({"epoch": 1, "loss": 0.1, "accuracy": 0.9, "seconds": 2.0, "samples_per_s": 5.0})
    >>> h["accuracy"], len(h)
    ([0.9], 1)
    """

    def __init__(self, records=None, config=None):
        self.records: list[dict] = list(records or [])
        self.config: dict = dict(config or {})

    @property
    def engine(self):
        """The training engine that ran (:mod:`fastnet.engines`), or None when not recorded.

        >>> History(config={"engine": "compiled"}).engine
        'compiled'
        """
        return self.config.get("engine")

    def append(self, record: dict) -> None:
        """Add one epoch's record.

        >>> h = History(); h.append({"epoch": 1, "loss": 0.5}); h["loss"]
        [0.5]
        """
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, key):
        """``h[i]`` is epoch record i; ``h["accuracy"]`` is that column as a list."""
        if isinstance(key, str):
            return [r.get(key) for r in self.records]
        return self.records[key]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, config={self.config})"

    def to_dict(self) -> dict:
        """JSON-ready ``{"config": ..., "epochs": [...]}``.

        >>> History([{"epoch": 1}], {"eta": 3.0}).to_dict()
        {'config': {'eta': 3.0}, 'epochs': [{'epoch': 1}]}
        """
        return {"config": self.config, "epochs": self.records}

    def save(self, path) -> None:
        """Write the history as JSON to ``path`` (atomically).

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "h.json")
        >>> History([{"epoch": 1, "loss": 0.2}]).save(path)
        >>> History.load(path)["loss"]
        [0.2]
        """
        from fastnet.io import atomic_write_text, check_target

        check_target(path, "history file")
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1), "history file")

    @classmethod
    def load(cls, path) -> "History":
        """Read a history written by :meth:`save` (see its example); refuses other JSON.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.json"); _ = open(path, "w").write("[]")
        >>> History.load(path)
        Traceback (most recent call last):
        ValueError: ... is not a fastnet history (no 'epochs' key)
        """
        d = json.loads(Path(path).read_text())
        if not isinstance(d, dict) or "epochs" not in d:
            raise ValueError(f"{path} is not a fastnet history (no 'epochs' key)")
        return cls(d["epochs"], d.get("config"))

    def format_line(self, r: dict) -> str:
        """``Epoch 3: test acc 9458 / 10000`` style line with the training loss, seconds and samples/s.

        The accuracy is on the validation data when there is some (``fastnet train``'s
        test split), else on the training data (``train acc``).

        >>> h = History(config={"n_val": 10000})
        >>> h.format_line({"epoch": 3, "loss": 0.1, "val_accuracy": 0.9458, "seconds": 0.5,
        ...                "samples_per_s": 120000.0})
        'Epoch 3: test acc 9458 / 10000  train loss 0.1000  0.50 s  120,000 samples/s'
        """
        acc_key = "val_accuracy" if "val_accuracy" in r else "accuracy"
        n = self.config.get("n_val" if acc_key == "val_accuracy" else "n_train")
        score = f"{round(r[acc_key] * n)} / {n}" if n else f"{r[acc_key]:.4f}"
        which = "test" if acc_key == "val_accuracy" else "train"
        return (f"Epoch {r['epoch']}: {which} acc {score}  train loss {r['loss']:.4f}  "
                f"{r['seconds']:.2f} s  {r['samples_per_s']:,.0f} samples/s")
