"""``train.py compare``: plan the (algorithm x seed) grid and run its cells in parallel worker processes; the report is :mod:`agents.report`'s.

Each cell is resolved here, in the parent (a typo fails once, before anything starts), and runs
:func:`agents.session.run_cell` in its own spawned process with one torch thread (processes, not
threads: the GIL and torch's own thread pool would otherwise fight over the cores). A worker gets the
resolved experiment itself, not a command line to parse again, and imports the code through the
parent's ``sys.path``, so it does not matter which directory ``compare`` was started from.
Rerunning the same command skips finished cells and resumes interrupted ones.

Output directory::

    runs/<env>__<algo>__s<seed>/   full run directories (see agents.rundir)
    logs/<algo>__s<seed>.log        each worker's stdout and stderr
    summaries/<algo>__s<seed>.json  copies of the per-run summary.json
    results.md                      the table (mean and 95% t-interval over seeds)
    results.json                    the same numbers, machine-readable
    learning_curves.png             evaluation return (or success rate) vs env steps, mean +- 95% CI

With several envs (``--env A B`` or a suite), each env gets that layout in ``<out>/<env>/``, and
``<out>/results.md`` adds rliable aggregates over the envs (:mod:`agents.aggregate`). With
``--backend ray`` the same cells run as Ray Tune trials (:mod:`agents.sweep_ray`), on this machine or
a cluster (``--address``), into the same run directories.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Sequence

from agents.experiment import Experiment, flags_of, resolve_experiment
from agents.hyperparams import Override
from agents.registry import get_algo
from agents.report import CellRun, write_report
from agents.rundir import SUMMARY_FILE, is_finished, read_summary
from agents.scores import metric_for
from agents.signals import interruptible

TRAIN_PY = Path(__file__).resolve().parent.parent / "train.py"


@dataclass
class Job:
    """One (algorithm, seed) cell of the grid and the worker that trains it."""

    exp: Experiment
    run_dir: Path
    log: Path
    command: list[str]
    device: str
    proc: BaseProcess | None = None
    started: float = 0.0
    returncode: int | None = None
    skipped: bool = False

    @property
    def name(self) -> str:
        return f"{self.exp.algo}__s{self.exp.seed}"

    @property
    def cell(self) -> CellRun:
        return CellRun(self.exp.algo, self.exp.seed, self.run_dir)


def _cell_command(args: argparse.Namespace, exp: Experiment, runs_dir: Path, run_name: str) -> list[str]:
    """:return: the ``train.py`` command line that trains the same cell alone (recorded in its config.yml and log)"""
    cmd = [
        sys.executable,
        str(TRAIN_PY),
        "--env", exp.env,
        "--algo", exp.algo,
        "--seed", str(exp.seed),
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
    if exp.hp_overrides:
        cmd += ["--hp", *exp.hp_overrides]
    return cmd


def plan(args: argparse.Namespace, overrides: Sequence[Override], out: Path) -> list[Job]:
    """
    Resolve every cell (exit 2 on bad names before anything starts) and build the job list.

    :param args: parsed ``compare`` flags
    :param overrides: the parsed ``--hp`` items; ``<algo>:`` ones reach that algorithm's cells only
    :param out: the comparison's output directory
    :return: one job per (algorithm, seed), those already finished at this budget marked skipped
    """
    algos = [get_algo(a).name for a in args.algos]
    jobs = []
    for algo in algos:
        for seed in range(args.seed_start, args.seed_start + args.seeds):
            exp = resolve_experiment(args.env, algo, seed=seed, overrides=overrides, **flags_of(args))
            run_name = f"{exp.env}__{algo}__s{seed}"
            run_dir = out / "runs" / run_name
            log = out / "logs" / f"{algo}__s{seed}.log"
            job = Job(exp, run_dir, log, _cell_command(args, exp, out / "runs", run_name), args.device)
            if is_finished(run_dir, exp.hyperparams["n_timesteps"]):
                job.skipped, job.returncode = True, 0
            jobs.append(job)
    return jobs


def _worker(exp: Experiment, run_dir: Path, command: list[str], log: Path, device: str) -> None:
    """The body of one worker process: train the cell, its output going to ``log``; exits with the run's exit code."""
    # Its own session, so a Ctrl-C in the terminal reaches only the parent, which forwards it once.
    os.setsid()
    with open(log, "a") as f:
        os.dup2(f.fileno(), sys.stdout.fileno())
        os.dup2(f.fileno(), sys.stderr.fileno())
    import torch

    from agents.session import RunOptions, run_cell

    torch.set_num_threads(1)
    try:
        summary = run_cell(exp, run_dir, RunOptions(device=device, progress_bar=False), command, continue_existing=True)
    except KeyboardInterrupt:  # before training began: nothing to save
        sys.exit(130)
    sys.exit(summary["exit_code"])


def run_jobs(jobs: list[Job], n_jobs: int) -> bool:
    """
    Run the jobs' workers, at most ``n_jobs`` at a time.

    Workers get their own session, so a Ctrl-C in the terminal reaches only this process; it then
    forwards SIGINT once to each running worker, which saves a checkpoint and its summary.

    :return: False when interrupted
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch or env state
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
                        log.write(f"$ {' '.join(job.command)}\n")
                    job.proc = context.Process(
                        target=_worker, args=(job.exp, job.run_dir, job.command, job.log, job.device), name=job.name
                    )
                    job.proc.start()
                    job.started = time.time()
                    running.append(job)
                    print(f"[{done}/{total}] started {job.run_dir.name}", flush=True)  # names the env too, as Ray's trials
                time.sleep(0.5)
                for job in list(running):
                    assert job.proc is not None
                    if job.proc.exitcode is not None:
                        job.returncode = job.proc.exitcode
                        running.remove(job)
                        done += 1
                        score = (read_summary(job.run_dir) or {}).get("score")
                        state = "finished" if job.returncode == 0 else f"FAILED (exit {job.returncode}, see {job.log})"
                        score_txt = f", score {score:.3f}" if isinstance(score, (int, float)) else ""
                        print(f"[{done}/{total}] {job.run_dir.name} {state} in {time.time() - job.started:.0f} s{score_txt}", flush=True)
        except KeyboardInterrupt:
            print(f"\ninterrupted: stopping {len(running)} running job(s); each saves a checkpoint...", file=sys.stderr, flush=True)
            for job in running:
                if job.proc is not None and job.proc.is_alive() and job.proc.pid is not None:
                    os.kill(job.proc.pid, signal.SIGINT)
            for job in running:
                if job.proc is not None:
                    job.proc.join(timeout=120)
                    if job.proc.exitcode is None:
                        job.proc.kill()
                        job.proc.join()
                    job.returncode = job.proc.exitcode
            return False
    return True


def _env_dirs(args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    """
    :param args: parsed ``compare`` flags; ``--env`` names and suites
    :return: the output directory and each env's directory in it: the output directory itself for one
        env, ``<out>/<env>/`` for several (each laid out as a one-env comparison)
    """
    import envs

    from agents.suites import expand_envs

    names = list(dict.fromkeys(envs.resolve_env_name(name) for name in expand_envs(args.env)))
    out: Path = args.out
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"compare__{names[0] if len(names) == 1 else f'{len(names)}envs'}__{stamp}"
    out = out.resolve()
    return out, {env: out if len(names) == 1 else out / env for env in names}


def _report_env(out: Path, jobs: list[Job], argv: list[str], started: float) -> str:
    """Write one env's summaries/, results.md, learning_curves.png and results.json; :return: the table"""
    env_name, family = jobs[0].exp.env, jobs[0].exp.family
    (out / "summaries").mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if (job.run_dir / SUMMARY_FILE).exists():
            shutil.copy(job.run_dir / SUMMARY_FILE, out / "summaries" / f"{job.name}.json")
    rows, table = write_report([j.cell for j in jobs], env_name, metric_for(family), out)
    # The compare's wall time over every invocation that wrote this file: a resumed or re-reported
    # comparison adds its own time instead of replacing the runs' with that of a pass that skipped them.
    try:
        previous = json.loads((out / "results.json").read_text()).get("wall_time_s", 0.0)
    except (FileNotFoundError, json.JSONDecodeError):  # a first report, or one cut short by a kill
        previous = 0.0
    results = {
        "env": env_name,
        "family": family,
        "command": [sys.executable, "train.py", *argv],
        "wall_time_s": round(previous + time.time() - started, 1),
        "confidence_interval": "95% Student-t over seeds",
        "rows": rows,
        "runs": [
            {"algo": j.exp.algo, "seed": j.exp.seed, "run_dir": str(j.run_dir), "returncode": j.returncode, "log": str(j.log)}
            for j in jobs
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return table


def run_compare(args: argparse.Namespace, overrides: Sequence[Override], argv: list[str]) -> int:
    """
    :param args: parsed ``compare`` flags
    :param overrides: the parsed ``--hp`` items
    :param argv: the command line, recorded in results.json
    :return: exit code (0 when every run finished, 1 when some failed, 130 when interrupted)
    """
    if args.device is None:
        args.device = "cuda" if args.backend == "ray" and args.gpus_per_run > 0 else "cpu"
    out, env_dirs = _env_dirs(args)
    by_env = {env: plan(argparse.Namespace(**{**vars(args), "env": env}), overrides, d) for env, d in env_dirs.items()}
    jobs = [job for env_jobs in by_env.values() for job in env_jobs]
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    completed = True
    if not args.table_only:
        n_skip = sum(j.skipped for j in jobs)
        names = ", ".join(env_dirs) if len(env_dirs) <= 3 else f"{len(env_dirs)} envs"
        where = "on Ray" if args.backend == "ray" else f"{args.jobs} at a time"
        print(f"compare on {names}: {len(jobs)} runs ({n_skip} already finished), {where} -> {out}", flush=True)
        if args.backend == "ray":
            from agents.sweep_ray import ray_options, run_jobs_on_ray

            completed = run_jobs_on_ray(jobs, out, ray_options(args), args.device)
        else:
            completed = run_jobs(jobs, args.jobs)
    tables = {env: _report_env(env_dirs[env], env_jobs, argv, started) for env, env_jobs in by_env.items()}
    if len(env_dirs) == 1:
        print("\n" + next(iter(tables.values())))
        print(f"written: {out / 'results.md'}, {out / 'learning_curves.png'}, {out / 'results.json'}")
    else:
        from agents.aggregate import run_records, write_suite_report

        cells = [(j.exp.env, j.exp.family, j.exp.algo, j.exp.seed, j.run_dir) for j in jobs]
        print("\n" + write_suite_report(out, tables, run_records(cells), reps=args.bootstrap_reps))
        print(f"written: {out / 'results.md'} (aggregate and every env's table), {out / 'aggregate.json'}, "
              f"{out / 'performance_profile.png'}, <env>/ (as for one env)")  # fmt: skip
    if not completed:
        print(f"interrupted: rerun the same command (with --out {out}) to resume the unfinished runs", file=sys.stderr)
        return 130
    failed = [j.run_dir.name for j in jobs if j.returncode not in (0, None)]
    if failed:
        print(f"failed runs: {', '.join(failed)} (see the logs/ folders in {out})", file=sys.stderr)
        return 1
    return 0


__all__ = ["Job", "plan", "run_compare", "run_jobs"]
