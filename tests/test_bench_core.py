"""benchmarks/bench_core.py: the core's cost at two commits, each measured from its own archived code."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_core_measures_each_revision_from_git(tmp_path):
    out = tmp_path / "ab.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), "HEAD", "HEAD", "--rounds", "1", "--repeats", "1",
               "--chains", "2", "--steps", "3", "--envs", "2", "--train-steps", "64", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["revs"] == ["HEAD", "HEAD"]
    assert all(ms > 0 for costs in report["cpu_ms_best_of_rounds"].values() for ms in costs.values())
    assert set(report["speedup"]) == {"update", "step", "train"}


def test_bench_core_refuses_a_revision_git_does_not_know(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), "HEAD", "no-such-rev"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "unknown git revision 'no-such-rev'" in result.stderr.strip().splitlines()[-1]
