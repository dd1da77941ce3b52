"""What a run reports: the headline metric of each env family, the score read from ``evaluations.npz``, and the interval over seeds.

POPGym (and any plain gymnasium env) is reported as MMER, the best mean evaluation return over
training; the T-Maze and MIKASA-Robo, whose episodes end in success or failure, as the success rate
of the last evaluation, i.e. of the final policy. :func:`metric_for` is the one place that choice is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Families whose tasks end in success or failure: reported as success rate, not MMER.
SUCCESS_FAMILIES = ("tmaze", "mikasa")
# How each metric is named in summaries, tables and plots.
METRIC_LABELS = {"mmer": "MMER (best mean eval return)", "success_rate": "success rate (last eval)"}
CURVE_LABELS = {"mmer": "mean evaluation return", "success_rate": "evaluation success rate"}


def metric_for(family: str) -> str:
    """
    :param family: an env family (``envs.env_family``)
    :return: the headline metric: ``success_rate`` for tmaze/mikasa, ``mmer`` otherwise
    """
    return "success_rate" if family in SUCCESS_FAMILIES else "mmer"


def summarize_evaluations(evals: dict[str, np.ndarray] | None, metric: str) -> dict[str, Any]:
    """
    :param evals: the contents of ``evaluations.npz`` (or None)
    :param metric: ``mmer`` or ``success_rate``
    :return: ``score`` (the headline: MMER = best mean evaluation return over training; success rate
        = the last evaluation's success rate, i.e. that of the final policy) and the other statistics
    """
    out: dict[str, Any] = {"metric": metric, "score": None, "n_evaluations": 0}
    if not evals or len(evals.get("timesteps", [])) == 0:
        return out
    means = np.asarray(evals["results"], dtype=float).mean(axis=1)
    best = int(np.argmax(means))
    out.update(
        n_evaluations=int(len(means)),
        best_mean_return=float(means[best]),
        best_mean_return_timesteps=int(evals["timesteps"][best]),
        last_mean_return=float(means[-1]),
        last_eval_timesteps=int(evals["timesteps"][-1]),
        mmer=float(means[best]),
    )
    if "successes" in evals and len(evals["successes"]) > 0:
        rates = np.asarray(evals["successes"], dtype=float).mean(axis=1)
        out.update(success_rate=float(rates[-1]), best_success_rate=float(rates.max()))
    if metric == "success_rate":
        out["score"] = out.get("success_rate")
    else:
        out["score"] = out["mmer"]
    return out


def evaluation_curve(evals: dict[str, np.ndarray] | None, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """
    :param evals: the contents of ``evaluations.npz`` (or None)
    :param metric: ``mmer`` or ``success_rate``
    :return: ``(timesteps, value)`` of every evaluation, the value being the success rate for
        ``success_rate`` runs that recorded successes and the mean return otherwise; None without evaluations
    """
    if not evals or len(evals.get("timesteps", [])) == 0:
        return None
    x = np.asarray(evals["timesteps"], dtype=float)
    if metric == "success_rate" and "successes" in evals:
        y = np.asarray(evals["successes"], dtype=float).mean(axis=1)
    else:
        y = np.asarray(evals["results"], dtype=float).mean(axis=1)
    return x, y


def t_interval(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """
    :param values: one number per seed
    :param confidence: coverage of the interval
    :return: ``(mean, low, high)``; low = high = mean for a single value (no interval from one seed)
    """
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr)))
    return mean, mean - half, mean + half
