"""Nielsen's recipe in fastnet, PyTorch and JAX, one script each with one command line and one
JSON format (``common``), and :func:`run` to run one of them in its own process.

``fastnet bench`` (:mod:`fastnet.benchmark`) and ``bench/bench_peers.py`` both run these:
``python -m fastnet._peers.torch_nielsen --sizes 784,500,500,10 --batch-size 1000 --steps 20``.
Every run is its own subprocess, so thread pools and JIT caches never mix.
"""
