"""The benchmark suites run (once each, untimed) so they cannot rot; speed is never judged here."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_suites_run_with_benchmark_disabled():
    r = subprocess.run([sys.executable, "-m", "pytest", "bench/", "-q", "-x", "--benchmark-disable",
                        "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1]
