"""The report of a comparison, from its run directories alone: rows aggregated over seeds, the markdown table, the learning-curve plot.

Confidence intervals are Student-t intervals over seeds, ``mean +- t(0.975, n-1) * sd / sqrt(n)``:
with 3-5 seeds a bootstrap interval is too narrow to be honest, and rliable's stratified
bootstrap needs more runs than a CPU comparison affords.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agents.rundir import load_evaluations, read_summary
from agents.scores import CURVE_LABELS, METRIC_LABELS, evaluation_curve, t_interval


@dataclass(frozen=True)
class CellRun:
    """
    Where one (algorithm, seed) cell of a comparison keeps its run.

    :param algo: registry name of the algorithm
    :param seed: random seed
    :param run_dir: the cell's run directory
    """

    algo: str
    seed: int
    run_dir: Path


def aggregate(cells: Sequence[CellRun], metric: str) -> list[dict[str, Any]]:
    """
    :param cells: the grid
    :param metric: the headline metric (:func:`agents.scores.metric_for`)
    :return: one row per algorithm with the mean and 95% t-interval of the headline score over seeds
    """
    rows = []
    for algo in dict.fromkeys(c.algo for c in cells):
        summaries = [s for c in cells if c.algo == algo and (s := read_summary(c.run_dir))]
        finished = [s for s in summaries if s.get("status") == "finished" and s.get("score") is not None]
        row: dict[str, Any] = {
            "algo": algo,
            "seeds": len([c for c in cells if c.algo == algo]),
            "finished": len(finished),
            "metric": metric,
        }
        if finished:
            scores = [float(s["score"]) for s in finished]
            mean, low, high = t_interval(scores)
            last = [float(s["last_mean_return"]) for s in finished if s.get("last_mean_return") is not None]
            row.update(
                score_mean=mean,
                score_ci95=[low, high],
                scores=scores,
                seeds_finished=[s["seed"] for s in finished],
                last_return_mean=float(np.mean(last)) if last else None,
                timesteps=int(np.mean([s["timesteps"] for s in finished])),
                env_steps_per_s=float(np.mean([s["env_steps_per_s"] for s in finished])),
                wall_time_s=float(np.mean([s["wall_time_s"] for s in finished])),
            )
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], env_name: str, metric: str, path: Path) -> str:
    """Write the markdown table and return it."""
    lines = [
        f"# {env_name}",
        "",
        f"| algo | seeds finished | {METRIC_LABELS[metric]}: mean [95% CI] | last eval return | timesteps | env-steps/s | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["finished"]:
            low, high = r["score_ci95"]
            ci = f"{r['score_mean']:.3f} [{low:.3f}, {high:.3f}]" if r["finished"] > 1 else f"{r['score_mean']:.3f} (1 seed, no CI)"
            last = f"{r['last_return_mean']:.3f}" if r.get("last_return_mean") is not None else "n/a"
            lines.append(
                f"| {r['algo']} | {r['finished']}/{r['seeds']} | {ci} | {last} | {r['timesteps']:,} | "
                f"{r['env_steps_per_s']:.0f} | {r['wall_time_s']:.0f} |"
            )
        else:
            lines.append(f"| {r['algo']} | 0/{r['seeds']} | n/a | n/a | n/a | n/a | n/a |")
    lines += [
        "",
        "95% CI: Student-t interval over seeds, mean +- t(0.975, n-1) * sd / sqrt(n); only finished runs count.",
        "MMER: maximum over training of the mean evaluation return (deterministic policy); success rate: "
        "mean `is_success` of the last evaluation. env-steps/s includes evaluation time.",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def plot_curves(cells: Sequence[CellRun], env_name: str, metric: str, path: Path) -> None:
    """Mean +- 95% t-interval band of the evaluation curve per algorithm, over env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algo in dict.fromkeys(c.algo for c in cells):
        curves = [cv for c in cells if c.algo == algo and (cv := evaluation_curve(load_evaluations(c.run_dir), metric)) is not None]
        if not curves:
            continue
        # Seeds share the evaluation schedule; interpolate onto the shortest run's points anyway
        # (resumed or interrupted runs may differ) and never extrapolate.
        end = min(c[0][-1] for c in curves)
        grid = np.unique(np.concatenate([c[0][c[0] <= end] for c in curves]))
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        mean = ys.mean(axis=0)
        line = ax.plot(grid, mean, label=f"{algo} (n={len(curves)})")[0]
        if len(curves) > 1:
            half = stats.t.ppf(0.975, len(curves) - 1) * ys.std(axis=0, ddof=1) / np.sqrt(len(curves))
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(CURVE_LABELS[metric])
    ax.set_title(f"{env_name}: mean and 95% t-interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cells: Sequence[CellRun], env_name: str, metric: str, out: Path) -> tuple[list[dict[str, Any]], str]:
    """
    Write ``results.md`` and ``learning_curves.png`` into ``out``.

    :return: the rows and the markdown table
    """
    rows = aggregate(cells, metric)
    table = write_table(rows, env_name, metric, out / "results.md")
    plot_curves(cells, env_name, metric, out / "learning_curves.png")
    return rows, table
