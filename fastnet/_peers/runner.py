"""Run one peer script in its own process and collect its JSON, with a note of how loaded the
machine was meanwhile (it may be shared): ``fastnet bench`` and ``bench/bench_peers.py`` use it."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The peer scripts: name -> module run with ``python -m``.
SCRIPTS = {"fastnet": "fastnet._peers.fastnet_nielsen", "torch": "fastnet._peers.torch_nielsen",
           "jax": "fastnet._peers.jax_nielsen"}


def busy_jiffies() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine from /proc/stat; (0, 0) where absent."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` of the CPUs
    over a ``window``; returns the seconds waited. The machine may be shared."""
    t0 = time.perf_counter()
    ncpu = os.cpu_count() or 1
    tick = os.sysconf("SC_CLK_TCK")
    while True:
        b0, c0 = busy_jiffies()[0], time.process_time()
        time.sleep(window)
        others = (busy_jiffies()[0] - b0) / tick - (time.process_time() - c0)
        if others / (window * ncpu) < threshold or time.perf_counter() - t0 > max_wait:
            return time.perf_counter() - t0


def run_script(script: str, argv: list[str], timeout: float, *, quiet_wait: float = 0.0, cwd=None,
               env=None) -> dict:
    """``python -m fastnet._peers.<script> ARGV --json TMP`` in its own process.

    ``script`` is a key of :data:`SCRIPTS` or a module name. Returns ``{"command", "rc",
    "wall_s", "others_share", ...}`` plus ``"result"`` (the script's JSON) when it succeeded,
    else ``"stdout_tail"`` / ``"stderr_tail"``; ``rc`` is ``"timeout"`` when it ran too long.
    """
    module = SCRIPTS.get(script, script)
    waited = wait_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", module, *argv, "--json", str(out)]
        load_before = os.getloadavg()
        busy0, steal0, kids0 = *busy_jiffies(), os.times()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = "timeout", exc.stdout or "", exc.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        wall = time.perf_counter() - t0
        busy1, steal1, kids1 = *busy_jiffies(), os.times()
        tick = os.sysconf("SC_CLK_TCK")
        ours = (kids1.children_user + kids1.children_system) - (kids0.children_user + kids0.children_system)
        others = max(0.0, (busy1 - busy0) / tick - ours)
        ncpu = os.cpu_count() or 1
        run = {"command": " ".join(["python", "-m", module, *argv]),
               "rc": rc, "wall_s": round(wall, 2), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               # CPU time other processes used meanwhile, as a share of the machine: the noise indicator
               "others_cpu_s": round(others, 2), "others_share": round(others / (wall * ncpu), 3),
               "steal_s": round((steal1 - steal0) / tick, 2), "waited_for_quiet_s": round(waited, 1)}
        if rc == 0 and out.exists():
            run["result"] = json.loads(out.read_text())
        else:
            run["stdout_tail"] = stdout[-2000:]
            run["stderr_tail"] = stderr[-2000:]
    return run


def median_tail(epochs: list[dict]) -> float:
    """Seconds per epoch: the median of epochs 2..N (the first one warms up), or epoch 1 alone."""
    secs = [e["seconds"] for e in epochs]
    return statistics.median(secs[1:] if len(secs) > 1 else secs)
