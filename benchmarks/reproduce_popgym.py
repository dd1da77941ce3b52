"""POPGym with equal tuning effort: the same learning-rate grid for every algorithm, then each one's best.

For every env and every learning rate of the grid, one ``train.py compare`` over the algorithms and
seeds (the POPGym preset otherwise: same envs, budget, seeds and evaluation for every algorithm) in
``<out>/<env>/lr<rate>/``. The report gives the whole grid and, per env, each algorithm at its own
best rate (highest mean MMER over seeds), which is what the headline table compares. Finished runs are
skipped and unfinished ones resumed by ``compare``, so rerunning after a stop loses nothing.

    python benchmarks/reproduce_popgym.py --out docs/results/popgym_head --jobs 2
    python benchmarks/reproduce_popgym.py --out docs/results/popgym_head --envs popgym-RepeatPreviousMedium --timesteps 1000000
    python benchmarks/reproduce_popgym.py --out docs/results/popgym_head --report-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ["popgym-RepeatPrevious", "popgym-RepeatFirst", "popgym-CountRecall", "popgym-Autoencode"]


def grid_dir(out: Path, env: str, rate: str) -> Path:
    return out / env / f"lr{rate}"


def train(out: Path, env: str, rate: str, algos: list[str], seeds: int, jobs: int, timesteps: int | None) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "compare", "--env", env, "--algos", *algos, "--seeds", str(seeds),
               "--jobs", str(jobs), "--out", str(grid_dir(out, env, rate)), "--hp", f"learning_rate={rate}"]  # fmt: skip
    command += ["--timesteps", str(timesteps)] if timesteps else []
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def grid_rows(out: Path, env: str, rates: list[str]) -> dict[str, dict[str, dict]]:
    """``{algo: {rate: row of compare's results.json}}`` for the grids that have a table."""
    rows: dict[str, dict[str, dict]] = {}
    for rate in rates:
        results = grid_dir(out, env, rate) / "results.json"
        if results.exists():
            for row in json.loads(results.read_text())["rows"]:
                if row["finished"]:
                    rows.setdefault(row["algo"], {})[rate] = row
    return rows


def best_score(entry: dict) -> float:
    """Mean MMER of one algorithm at its best rate (an entry of ``grid.json``'s ``envs``)."""
    return entry["grid"][entry["best_rate"]]["score_mean"]


def _cell(row: dict) -> str:
    if row["finished"] == 1:  # one seed has no interval
        return f"{row['score_mean']:.3f} (1 seed)"
    low, high = row["score_ci95"]
    partial = "" if row["finished"] == row["seeds"] else f", {row['finished']}/{row['seeds']} seeds"
    return f"{row['score_mean']:.3f} [{low:.3f}, {high:.3f}]{partial}"


def report(out: Path, envs: list[str], algos: list[str], rates: list[str]) -> str:
    best_lines = ["| env | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    grid_lines = ["| env | algorithm | " + " | ".join(f"lr {r}" for r in rates) + " |", "|---|---|" + "---|" * len(rates)]
    summary: dict[str, dict] = {}
    for env in envs:
        rows = grid_rows(out, env, rates)
        if not rows:
            continue
        best = {algo: max(by_rate, key=lambda r: by_rate[r]["score_mean"]) for algo, by_rate in rows.items()}
        summary[env] = {algo: {"best_rate": best[algo], "grid": rows[algo]} for algo in rows}
        best_lines.append(f"| {env} | " + " | ".join(
            f"{_cell(rows[a][best[a]])} (lr {best[a]})" if a in rows else "-" for a in algos) + " |")  # fmt: skip
        for algo in algos:
            if algo in rows:
                grid_lines.append(f"| {env} | {algo} | " + " | ".join(_cell(rows[algo][r]) if r in rows[algo] else "-" for r in rates) + " |")
    verdict, verdict_lines = {}, []
    for other in algos[1:]:  # the first algorithm against each other one, each at its own best rate
        both = [env for env, by_algo in summary.items() if algos[0] in by_algo and other in by_algo]
        wins = [env for env in both if best_score(summary[env][algos[0]]) >= best_score(summary[env][other])]
        verdict[f"{algos[0]} >= {other}"] = {"envs": both, "wins": wins}
        verdict_lines.append(f"{algos[0]} >= {other} (mean MMER, each at its best rate) on {len(wins)} of {len(both)} envs"
                             + (f": {', '.join(wins)}" if wins else ""))  # fmt: skip
    text = "\n".join([
        "MMER (maximum over training of the mean evaluation return), mean over seeds with a 95% Student-t "
        "interval. Each algorithm at its own best learning rate of the grid:", "", *best_lines, "", *verdict_lines, "",
        "The whole grid:", "", *grid_lines,
    ]) + "\n"  # fmt: skip
    (out / "grid.md").write_text(text)
    (out / "grid.json").write_text(json.dumps({"envs": summary, "verdict": verdict}, indent=2) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--algos", nargs="+", default=["ppo-elmur", "ppo-lstm"])
    parser.add_argument("--rates", nargs="+", default=["3e-4", "1e-3"], help="the learning-rate grid, the same for every algorithm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=None, help="budget per run (default: the preset's, 500k)")
    parser.add_argument("--report-only", action="store_true", help="do not train; rebuild the tables")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    for rate in args.rates:
        try:
            float(rate)
        except ValueError:
            parser.error(f"--rates takes numbers such as 3e-4, got {rate!r}")
    if not args.report_only:
        for env in args.envs:
            for rate in args.rates:
                train(out, env, rate, args.algos, args.seeds, args.jobs, args.timesteps)
    print(report(out, args.envs, args.algos, args.rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
