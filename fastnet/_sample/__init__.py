"""The embedded data sample: the real MNIST test split (10,000 digits, IDX, gzip).

:func:`fastnet.data.load_sample` reads it; ``fastnet train`` falls back to it when no
other data is found.
"""
