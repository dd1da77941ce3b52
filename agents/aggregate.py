"""Suite-level verdicts with rliable: normalised scores, IQM and mean with stratified-bootstrap intervals, probability of improvement and performance profiles.

The input is one record per finished run (``env``, ``family``, ``algo``, ``seed``, ``score``), as
``compare`` reads them from the runs' ``summary.json``. Scores are normalised per env to [0, 1]:

- POPGym (MMER): returns lie in [-1, 1], so ``(score + 1) / 2``;
- T-Maze, MIKASA-Robo (success rate): already in [0, 1], unchanged;
- any other gymnasium env: no known bounds, so min-max over every run of that env in the
  comparison (all algorithms together); such aggregates are relative to this comparison only
  and the report says so.

The statistics are rliable's (Agarwal et al., NeurIPS 2021): ``aggregate_iqm``/``aggregate_mean``
with ``get_interval_estimates`` (stratified bootstrap over runs within each task),
``probability_of_improvement`` and ``create_performance_profile``. An algorithm's score matrix
holds the seeds that finished on every env of the comparison (runs x tasks).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Known score ranges per family: (low, high) of the headline metric.
KNOWN_RANGES: dict[str, tuple[float, float]] = {"popgym": (-1.0, 1.0), "tmaze": (0.0, 1.0), "mikasa": (0.0, 1.0)}
NORMALISATION_TEXT = {
    "popgym": "POPGym MMER lies in [-1, 1]: normalised (score + 1) / 2",
    "tmaze": "T-Maze success rate, already in [0, 1]",
    "mikasa": "MIKASA-Robo success rate, already in [0, 1]",
    "gym": "no known bounds: min-max over all runs of the env in this comparison (relative to it only)",
}
# The reference algorithm whose probability of improvement over each other algorithm is reported.
REFERENCE_ALGO = "ppo-elmur"


def normalise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    :param records: one dict per finished run with ``env``, ``family``, ``algo``, ``seed``, ``score``
    :return: copies with ``normalised`` (in [0, 1]) and ``normalisation`` (how) added
    """
    by_env: dict[str, list[float]] = {}
    for r in records:
        by_env.setdefault(r["env"], []).append(float(r["score"]))
    out = []
    for r in records:
        family = r["family"]
        if family in KNOWN_RANGES:
            low, high = KNOWN_RANGES[family]
            how = family
        else:
            low, high = min(by_env[r["env"]]), max(by_env[r["env"]])
            how = "gym"
        span = high - low
        value = (float(r["score"]) - low) / span if span > 0 else 0.5
        out.append({**r, "normalised": float(value), "normalisation": how})
    return out


def score_matrices(records: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[int]]]:
    """
    :param records: normalised records (see :func:`normalise`)
    :return: ``(envs, {algo: runs x tasks matrix}, {algo: the seeds used})``; an algorithm's rows are
        the seeds that finished on every env, so the matrix is full; algorithms without one are left out
    """
    envs = list(dict.fromkeys(r["env"] for r in records))
    matrices: dict[str, np.ndarray] = {}
    seeds_used: dict[str, list[int]] = {}
    for algo in dict.fromkeys(r["algo"] for r in records):
        table = {(r["env"], r["seed"]): r["normalised"] for r in records if r["algo"] == algo}
        seeds = sorted({s for (_, s) in table if all((e, s) in table for e in envs)})
        if seeds:
            matrices[algo] = np.array([[table[(e, s)] for e in envs] for s in seeds], dtype=float)
            seeds_used[algo] = seeds
    return envs, matrices, seeds_used


def compute_aggregates(
    records: Sequence[dict[str, Any]],
    reps: int = 2000,
    seed: int = 0,
    reference: str = REFERENCE_ALGO,
) -> dict[str, Any]:
    """
    IQM and mean of the normalised scores with stratified-bootstrap 95% intervals, and the
    probability that ``reference`` beats each other algorithm (with its interval).

    :param records: one dict per finished run (see :func:`normalise`)
    :param reps: bootstrap replications of IQM and mean; the probability of improvement, which runs a
        Mann-Whitney test per env per replication, gets a fifth of them (at least 200)
    :param seed: seed of the bootstrap (the intervals are reproducible)
    :param reference: the algorithm compared with every other one; the first algorithm when absent
    :return: ``{"envs", "normalisation", "algos": {algo: {"runs", "seeds", "iqm", "iqm_ci95", "mean",
        "mean_ci95"}}, "probability_of_improvement": [{"x", "y", "p", "ci95"}], "matrices"}``
    """
    from rliable import library as rly
    from rliable import metrics

    normalised = normalise(records)
    envs, matrices, seeds_used = score_matrices(normalised)
    how = {r["env"]: r["normalisation"] for r in normalised}
    result: dict[str, Any] = {
        "envs": envs,
        "normalisation": {env: NORMALISATION_TEXT[how[env]] for env in envs},
        "algos": {},
        "probability_of_improvement": [],
        "bootstrap": {"method": "stratified bootstrap (rliable), percentile intervals", "reps": reps,
                      "reps_probability_of_improvement": max(reps // 5, 200), "seed": seed},  # fmt: skip
        "matrices": {algo: m.tolist() for algo, m in matrices.items()},
    }
    if not matrices:
        return result

    def aggregate_func(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch, inside rliable, on passing a RandomState
        points, intervals = rly.get_interval_estimates(
            matrices, aggregate_func, reps=reps, random_state=np.random.RandomState(seed)
        )
    for algo, matrix in matrices.items():
        iv = np.asarray(intervals[algo])
        result["algos"][algo] = {
            "runs": int(matrix.shape[0]),
            "seeds": seeds_used[algo],
            "iqm": float(points[algo][0]),
            "iqm_ci95": [float(iv[0, 0]), float(iv[1, 0])],
            "mean": float(points[algo][1]),
            "mean_ci95": [float(iv[0, 1]), float(iv[1, 1])],
        }
    ref = reference if reference in matrices else next(iter(matrices))
    pairs = {f"{ref},{other}": [matrices[ref], matrices[other]] for other in matrices if other != ref}
    if pairs:

        def poi_func(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return np.array([metrics.probability_of_improvement(x, y)])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            p_points, p_intervals = rly.get_interval_estimates(
                pairs, poi_func, reps=result["bootstrap"]["reps_probability_of_improvement"], random_state=np.random.RandomState(seed)
            )
        for key in pairs:
            x, y = key.split(",")
            iv = np.asarray(p_intervals[key])
            result["probability_of_improvement"].append(
                {"x": x, "y": y, "p": float(p_points[key][0]), "ci95": [float(iv[0, 0]), float(iv[1, 0])]}
            )
    return result


def plot_performance_profile(
    records: Sequence[dict[str, Any]], path: Path, reps: int = 2000, seed: int = 0
) -> bool:
    """
    Write rliable's performance profile (fraction of runs with normalised score > tau, with
    stratified-bootstrap 95% bands) to ``path``.

    :param records: one dict per finished run (see :func:`normalise`)
    :param path: the PNG to write
    :param reps: bootstrap replications of the bands
    :param seed: seed of the bootstrap
    :return: False when no algorithm has a full score matrix (nothing written)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    envs, matrices, _ = score_matrices(normalise(records))
    if not matrices:
        return False
    taus = np.linspace(0.0, 1.0, 101)
    np.random.seed(seed)  # create_performance_profile takes no random_state
    labelled = {f"{algo} ({m.shape[0]} runs x {m.shape[1]} envs)": m for algo, m in matrices.items()}
    profiles, cis = rly.create_performance_profile(labelled, taus, reps=reps)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=cis, ax=ax,
        xlabel=r"normalised score ($\tau$)", ylabel=r"fraction of runs with score > $\tau$",
    )  # fmt: skip
    ax.set_title(f"performance profile over {len(envs)} envs (95% stratified-bootstrap bands)")
    ax.legend(handles=ax.get_lines(), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _ci(point: float, ci: list[float]) -> str:
    return f"{point:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def aggregates_markdown(agg: dict[str, Any]) -> str:
    """
    :param agg: the result of :func:`compute_aggregates`
    :return: the markdown section of the report
    """
    lines = [f"## Aggregate over {len(agg['envs'])} envs (rliable)", ""]
    if not agg["algos"]:
        return "\n".join(lines + ["No algorithm finished a seed on every env: no aggregate.", ""])
    lines += ["| algo | runs x envs | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|"]
    for algo, a in agg["algos"].items():
        lines.append(f"| {algo} | {a['runs']} x {len(agg['envs'])} | {_ci(a['iqm'], a['iqm_ci95'])} | {_ci(a['mean'], a['mean_ci95'])} |")
    lines.append("")
    for p in agg["probability_of_improvement"]:
        lines.append(f"- P({p['x']} > {p['y']}) = {_ci(p['p'], p['ci95'])} (probability of improvement, averaged over envs)")
    lines += [
        "",
        f"Scores normalised to [0, 1] per env; intervals: {agg['bootstrap']['method']}, "
        f"{agg['bootstrap']['reps']} replications ({agg['bootstrap']['reps_probability_of_improvement']} for P(X > Y)). IQM: mean of the middle 50% of all runs x envs. "
        "An algorithm's runs are the seeds that finished on every env.",
    ]
    for text in dict.fromkeys(agg["normalisation"].values()):
        envs = [e for e, t in agg["normalisation"].items() if t == text]
        lines.append(f"- {text}: {', '.join(envs)}")
    lines.append("")
    return "\n".join(lines)


def run_records(cells: Sequence[tuple[str, str, str, int, Path]]) -> list[dict[str, Any]]:
    """
    :param cells: ``(env, family, algo, seed, run_dir)`` of every cell of a comparison
    :return: one record per finished run with a score (see :func:`normalise`)
    """
    from agents.sweep_api import read_summary

    records = []
    for env, family, algo, seed, run_dir in cells:
        summary = read_summary(Path(run_dir)) or {}
        if summary.get("status") == "finished" and summary.get("score") is not None:
            records.append({"env": env, "family": family, "algo": algo, "seed": int(seed), "score": float(summary["score"])})
    return records


def write_suite_report(out: Path, env_tables: dict[str, str], records: Sequence[dict[str, Any]], reps: int = 2000) -> str:
    """
    Write the report of a comparison over several envs: ``results.md`` (the rliable aggregate, then
    every env's table), ``aggregate.json`` and ``performance_profile.png``.

    :param out: the comparison's output directory
    :param env_tables: ``{env: its markdown table}`` (as in each env's own results.md)
    :param records: the finished runs (:func:`run_records`)
    :param reps: bootstrap replications
    :return: the aggregate's markdown section
    """
    import json

    agg = compute_aggregates(records, reps=reps)
    plotted = plot_performance_profile(records, out / "performance_profile.png", reps=min(reps, 1000))
    section = aggregates_markdown(agg)
    if plotted:
        section += "\n![performance profile](performance_profile.png)\n"
    body = [f"# compare over {len(env_tables)} envs", "", section, "## Per env", ""]
    body += [table.replace("# ", "### ", 1) for table in env_tables.values()]
    (out / "results.md").write_text("\n".join(body))
    (out / "aggregate.json").write_text(json.dumps({**agg, "records": list(records)}, indent=2) + "\n")
    return section


__all__ = ["KNOWN_RANGES", "run_records", "write_suite_report", "aggregates_markdown", "compute_aggregates", "normalise", "plot_performance_profile", "score_matrices"]
