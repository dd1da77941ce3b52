"""benchmarks/bench_learning.py: the efficiency and stability figures of a run, and its frozen updates."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_learning import FROZEN_KL, frozen_fraction, run_metrics  # noqa: E402


def test_run_metrics_count_steps_to_90_and_what_is_held():
    steps = np.array([10, 20, 30, 40, 50])
    metrics = run_metrics(steps, np.array([0.1, 0.95, 0.5, 0.92, 0.91]))
    assert metrics["steps_to_90"] == 20 and metrics["best"] == 0.95 and metrics["final"] == 0.91
    assert metrics["held_after_90"] == 0.75 and metrics["final_within_10pct_of_best"]
    never = run_metrics(steps, np.array([0.1, 0.2, 0.3, 0.2, 0.1]))
    assert never["steps_to_90"] is None and never["held_after_90"] is None and not never["final_within_10pct_of_best"]
    assert metrics["solved_and_kept"] and not never["solved_and_kept"]
    # a run flat at chance ends within 10% of its best, yet it never solved the task: not "kept"
    flat = run_metrics(steps, np.zeros(5))
    assert flat["final_within_10pct_of_best"] and not flat["solved_and_kept"]
    lost = run_metrics(steps, np.array([0.1, 0.95, 1.0, 0.5, 0.4]))
    assert lost["steps_to_90"] == 20 and not lost["solved_and_kept"]


def test_frozen_fraction_reads_the_late_updates_from_every_tensorboard_file(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    assert frozen_fraction(tmp_path) is None  # no log, no figure
    # a run resumed once: two event files; the second half of its 8 updates has 3 frozen ones
    kls = [1e-2, 5e-3, 1e-3, 2e-3, 0.0, 1e-3, FROZEN_KL / 10, 0.0]
    for part, (begin, end) in enumerate([(0, 5), (5, 8)]):
        writer = SummaryWriter(str(tmp_path / "tb" / f"ppo-elmur_{part}"))
        for step in range(begin, end):
            writer.add_scalar("train/approx_kl", kls[step], global_step=1000 * step)
        writer.close()
    assert frozen_fraction(tmp_path) == 0.75
