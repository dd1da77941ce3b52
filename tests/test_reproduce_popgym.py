"""benchmarks/reproduce_popgym.py's report: each algorithm at its own best rate, and the verdict over envs."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reproduce_popgym  # noqa: E402


def _results(out: Path, env: str, rate: str, scores: dict[str, float], finished: int = 3) -> None:
    rows = [dict(algo=algo, seeds=3, finished=finished, score_mean=score, score_ci95=[score - 0.1, score + 0.1])
            for algo, score in scores.items()]  # fmt: skip
    grid = reproduce_popgym.grid_dir(out, env, rate)
    grid.mkdir(parents=True)
    (grid / "results.json").write_text(json.dumps({"rows": rows}))


def test_report_compares_each_algorithm_at_its_own_best_rate(tmp_path):
    # env A: elmur best at 1e-3 (0.9), lstm best at 3e-4 (0.8) -> elmur wins with the best of each
    _results(tmp_path, "A", "3e-4", {"ppo-elmur": 0.5, "ppo-lstm": 0.8})
    _results(tmp_path, "A", "1e-3", {"ppo-elmur": 0.9, "ppo-lstm": 0.1})
    # env B: lstm better at both rates; env C: a tie counts as >=; env D: no lstm row finished
    _results(tmp_path, "B", "3e-4", {"ppo-elmur": -0.5, "ppo-lstm": -0.2})
    _results(tmp_path, "C", "3e-4", {"ppo-elmur": 1.0, "ppo-lstm": 1.0})
    _results(tmp_path, "D", "3e-4", {"ppo-elmur": 1.0})
    text = reproduce_popgym.report(tmp_path, ["A", "B", "C", "D"], ["ppo-elmur", "ppo-lstm"], ["3e-4", "1e-3"])
    assert "ppo-elmur >= ppo-lstm (mean MMER, each at its best rate) on 2 of 3 envs: A, C" in text
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid["envs"]["A"]["ppo-elmur"]["best_rate"] == "1e-3" and grid["envs"]["A"]["ppo-lstm"]["best_rate"] == "3e-4"
    assert grid["verdict"] == {"ppo-elmur >= ppo-lstm": {"envs": ["A", "B", "C"], "wins": ["A", "C"]}}
    assert "| A | 0.900 [0.800, 1.000] (lr 1e-3) | 0.800 [0.700, 0.900] (lr 3e-4) |" in text


def test_report_skips_unfinished_cells(tmp_path):
    _results(tmp_path, "A", "3e-4", {"ppo-elmur": 0.5, "ppo-lstm": 0.8}, finished=0)
    text = reproduce_popgym.report(tmp_path, ["A"], ["ppo-elmur", "ppo-lstm"], ["3e-4"])
    assert "on 0 of 0 envs" in text


def test_report_gives_one_seed_no_interval(tmp_path):
    _results(tmp_path, "A", "1e-3", {"ppo-elmur": 0.4, "ppo-lstm": 0.0}, finished=1)
    text = reproduce_popgym.report(tmp_path, ["A"], ["ppo-elmur", "ppo-lstm"], ["1e-3"])
    assert "| A | 0.400 (1 seed) (lr 1e-3) | 0.000 (1 seed) (lr 1e-3) |" in text

