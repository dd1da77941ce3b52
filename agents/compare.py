"""``train.py compare``: the (algorithm x seed) grid in parallel processes, a table and a plot.

Each run is a separate ``train.py`` process with one torch thread (processes, not threads: the
GIL and torch's own thread pool would otherwise fight over the cores), in its own run directory
under ``<out>/runs/``. Rerunning the same command skips finished runs and resumes interrupted ones.

Output directory::

    runs/<env>__<algo>__s<seed>/   full run directories (see agents.runner)
    logs/<algo>__s<seed>.log        each process's stdout and stderr
    summaries/<algo>__s<seed>.json  copies of the per-run summary.json
    results.md                      the table (mean and 95% t-interval over seeds)
    results.json                    the same numbers, machine-readable
    learning_curves.png             evaluation return (or success rate) vs env steps, mean +- 95% CI

Confidence intervals are Student-t intervals over seeds, ``mean +- t(0.975, n-1) * sd / sqrt(n)``:
with 3-5 seeds a bootstrap interval is too narrow to be honest, and rliable's stratified
bootstrap needs more runs than a CPU comparison affords.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.registry import get_algo
from agents.runner import CONFIG_FILE, SUMMARY_FILE, SUCCESS_FAMILIES, interruptible, load_evaluations

TRAIN_PY = Path(__file__).resolve().parent.parent / "train.py"


@dataclass
class Job:
    """One (algorithm, seed) run of the grid."""

    algo: str
    seed: int
    run_dir: Path
    log: Path
    cmd: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    returncode: int | None = None
    skipped: bool = False

    @property
    def name(self) -> str:
        return f"{self.algo}__s{self.seed}"


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


def _split_hp(items: list[str] | None, algos: list[str]) -> dict[str, list[str]]:
    """``--hp`` items apply to every algorithm; ``<algo>:key=value`` only to that one."""
    per_algo: dict[str, list[str]] = {a: [] for a in algos}
    for item in items or []:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            algo = get_algo(head).name
            if algo in per_algo:
                per_algo[algo].append(rest)
        else:
            for a in algos:
                per_algo[a].append(item)
    return per_algo


def _child_cmd(args: argparse.Namespace, env_name: str, algo: str, seed: int, runs_dir: Path, run_name: str, hp: list[str]) -> list[str]:
    cmd = [
        sys.executable,
        str(TRAIN_PY),
        "--env", env_name,
        "--algo", algo,
        "--seed", str(seed),
        "--out", str(runs_dir),
        "--run-name", run_name,
        "--threads", "1",
        "--device", args.device,
        "--no-progress-bar",
    ]  # fmt: skip
    for flag, value in (
        ("--timesteps", args.timesteps),
        ("--n-envs", args.n_envs),
        ("--eval-freq", args.eval_freq),
        ("--eval-episodes", args.eval_episodes),
        ("--eval-env", args.eval_env),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    if args.no_prev_action:
        cmd.append("--no-prev-action")
    if hp:
        cmd += ["--hp", *hp]
    return cmd


def _plan(args: argparse.Namespace, out: Path) -> tuple[str, str, list[Job]]:
    """Resolve names (exit 2 on bad ones before anything starts) and build the job list."""
    from agents.runner import resolve_experiment

    algos = [get_algo(a).name for a in args.algos]
    hp = _split_hp(args.hp, algos)
    env_name = family = ""
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    jobs = []
    for algo in algos:
        # Validates env, algo and --hp here, in the parent: a typo fails once, not once per process.
        exp = resolve_experiment(args.env, algo, hp=hp[algo], eval_env=args.eval_env, timesteps=args.timesteps)
        env_name, family = exp.env, exp.family
        for seed in seeds:
            run_name = f"{exp.env}__{algo}__s{seed}"
            run_dir = out / "runs" / run_name
            cmd = _child_cmd(args, exp.env, algo, seed, out / "runs", run_name, hp[algo])
            summary = _read_summary(run_dir)
            target = exp.hyperparams["n_timesteps"]
            if summary and summary.get("status") == "finished" and summary.get("timesteps", 0) >= target:
                jobs.append(Job(algo, seed, run_dir, out / "logs" / f"{algo}__s{seed}.log", cmd, skipped=True, returncode=0))
                continue
            if (run_dir / CONFIG_FILE).exists() and list((run_dir / "checkpoints").glob("*.zip")):
                cmd = [sys.executable, str(TRAIN_PY), "--resume", str(run_dir), "--timesteps", str(target),
                       "--threads", "1", "--device", args.device, "--no-progress-bar"]  # fmt: skip
            elif run_dir.exists():
                shutil.rmtree(run_dir)  # started but never checkpointed: nothing to keep
            jobs.append(Job(algo, seed, run_dir, out / "logs" / f"{algo}__s{seed}.log", cmd))
    return env_name, family, jobs


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


def _run_jobs(jobs: list[Job], n_jobs: int) -> bool:
    """
    Run the jobs, at most ``n_jobs`` at a time.

    Children get their own session, so a Ctrl-C in the terminal reaches only this process; it then
    forwards SIGINT once to each running child, which saves a checkpoint and its summary.

    :return: False when interrupted
    """
    pending = [j for j in jobs if not j.skipped]
    running: list[Job] = []
    total = len(pending)
    done = 0
    with interruptible():
        try:
            while pending or running:
                while pending and len(running) < n_jobs:
                    job = pending.pop(0)
                    job.log.parent.mkdir(parents=True, exist_ok=True)
                    with open(job.log, "a") as log:
                        log.write(f"$ {' '.join(job.cmd)}\n")
                        log.flush()
                        job.proc = subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    job.started = time.time()
                    running.append(job)
                    print(f"[{done}/{total}] started {job.name}", flush=True)
                time.sleep(0.5)
                for job in list(running):
                    assert job.proc is not None
                    if job.proc.poll() is not None:
                        job.returncode = job.proc.returncode
                        running.remove(job)
                        done += 1
                        summary = _read_summary(job.run_dir) or {}
                        score = summary.get("score")
                        state = "finished" if job.returncode == 0 else f"FAILED (exit {job.returncode}, see {job.log})"
                        score_txt = f", score {score:.3f}" if isinstance(score, (int, float)) else ""
                        print(f"[{done}/{total}] {job.name} {state} in {time.time() - job.started:.0f} s{score_txt}", flush=True)
        except KeyboardInterrupt:
            print(f"\ninterrupted: stopping {len(running)} running job(s); each saves a checkpoint...", file=sys.stderr, flush=True)
            for job in running:
                if job.proc is not None and job.proc.poll() is None:
                    job.proc.send_signal(signal.SIGINT)
            for job in running:
                if job.proc is not None:
                    try:
                        job.returncode = job.proc.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        job.proc.kill()
                        job.returncode = job.proc.wait()
            return False
    return True


def _curve(run_dir: Path, use_success: bool) -> tuple[np.ndarray, np.ndarray] | None:
    evals = load_evaluations(run_dir)
    if not evals or len(evals.get("timesteps", [])) == 0:
        return None
    x = np.asarray(evals["timesteps"], dtype=float)
    if use_success and "successes" in evals:
        y = np.asarray(evals["successes"], dtype=float).mean(axis=1)
    else:
        y = np.asarray(evals["results"], dtype=float).mean(axis=1)
    return x, y


def aggregate(jobs: list[Job], family: str) -> list[dict[str, Any]]:
    """
    :param jobs: the grid
    :param family: env family (fixes the metric)
    :return: one row per algorithm with the mean and 95% t-interval of the headline score over seeds
    """
    rows = []
    for algo in dict.fromkeys(j.algo for j in jobs):
        summaries = [s for j in jobs if j.algo == algo and (s := _read_summary(j.run_dir))]
        finished = [s for s in summaries if s.get("status") == "finished" and s.get("score") is not None]
        row: dict[str, Any] = {
            "algo": algo,
            "seeds": len([j for j in jobs if j.algo == algo]),
            "finished": len(finished),
            "metric": "success_rate" if family in SUCCESS_FAMILIES else "mmer",
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


def write_table(rows: list[dict[str, Any]], env_name: str, family: str, path: Path) -> str:
    """Write the markdown table and return it."""
    metric = "success rate (final eval)" if family in SUCCESS_FAMILIES else "MMER (best mean eval return)"
    lines = [
        f"# {env_name}",
        "",
        f"| algo | seeds finished | {metric}: mean [95% CI] | last eval return | timesteps | env-steps/s | wall time (s) |",
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


def plot_curves(jobs: list[Job], env_name: str, family: str, path: Path) -> None:
    """Mean +- 95% t-interval band of the evaluation curve per algorithm, over env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    use_success = family in SUCCESS_FAMILIES
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algo in dict.fromkeys(j.algo for j in jobs):
        curves = [c for j in jobs if j.algo == algo and (c := _curve(j.run_dir, use_success)) is not None]
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
    ax.set_ylabel("evaluation success rate" if use_success else "mean evaluation return")
    ax.set_title(f"{env_name}: mean and 95% t-interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_compare(args: argparse.Namespace, argv: list[str]) -> int:
    """
    :param args: parsed ``compare`` flags
    :param argv: the command line, recorded in results.json
    :return: exit code (0 when every run finished, 1 when some failed, 130 when interrupted)
    """
    out: Path = args.out
    if out is None:
        import envs

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"compare__{envs.resolve_env_name(args.env)}__{stamp}"
    out = out.resolve()
    env_name, family, jobs = _plan(args, out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    completed = True
    if not args.table_only:
        n_skip = sum(j.skipped for j in jobs)
        print(f"compare on {env_name}: {len(jobs)} runs ({n_skip} already finished), {args.jobs} at a time -> {out}", flush=True)
        completed = _run_jobs(jobs, args.jobs)
    (out / "summaries").mkdir(exist_ok=True)
    for job in jobs:
        if (job.run_dir / SUMMARY_FILE).exists():
            shutil.copy(job.run_dir / SUMMARY_FILE, out / "summaries" / f"{job.name}.json")
    rows = aggregate(jobs, family)
    table = write_table(rows, env_name, family, out / "results.md")
    plot_curves(jobs, env_name, family, out / "learning_curves.png")
    results = {
        "env": env_name,
        "family": family,
        "command": [sys.executable, "train.py", *argv],
        "wall_time_s": round(time.time() - started, 1),
        "confidence_interval": "95% Student-t over seeds",
        "rows": rows,
        "runs": [{"algo": j.algo, "seed": j.seed, "run_dir": str(j.run_dir), "returncode": j.returncode, "log": str(j.log)} for j in jobs],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table)
    print(f"written: {out / 'results.md'}, {out / 'learning_curves.png'}, {out / 'results.json'}")
    if not completed:
        print(f"interrupted: rerun the same command (with --out {out}) to resume the unfinished runs", file=sys.stderr)
        return 130
    failed = [j.name for j in jobs if j.returncode not in (0, None)]
    if failed:
        print(f"failed runs: {', '.join(failed)} (see {out / 'logs'})", file=sys.stderr)
        return 1
    return 0


__all__ = ["aggregate", "plot_curves", "run_compare", "t_interval", "write_table"]
