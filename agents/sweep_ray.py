"""The Ray Tune backend of ``compare``: every grid cell is one Tune trial that runs the same runner as ``train.py`` in its run directory and reports its evaluations to Tune.

A trial calls :func:`agents.sweep_api.run_cell_reporting`: it trains the cell, resumes it from its
latest checkpoint when the run directory already has one (a restarted trial, a rerun command), or
returns at once when the run has finished. Tune restarts a trial whose worker died up to
``max_failures`` times; the restart resumes from the run's own checkpoint. The run directories
are the source of truth, so every node must see ``--out`` at the same path (a shared filesystem).

Besides the run directories and each cell's log (where the local backend puts them) a sweep writes::

    attempts/<cell>.jsonl        one line per trial start: node, host, pid, Tune trial id, restored or not
    ray/<experiment>/            Tune's own experiment state, results and small checkpoints
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.sweep_api import Experiment, RunOptions, is_finished, list_checkpoints, run_cell_reporting

REPO_ROOT = Path(__file__).resolve().parent.parent
# Name of the small file inside a Tune checkpoint: where the run and its SB3 checkpoint are.
TUNE_CHECKPOINT_FILE = "run.json"


@dataclass
class RayOptions:
    """
    Where and how the trials run.

    :param address: the address of a running Ray cluster (``ray start --head`` prints it; ``auto``
        finds the local one), or None for a local Ray started by this process
    :param cpus_per_run: CPUs each trial reserves (fractions allowed); also its torch thread count
    :param gpus_per_run: GPUs each trial reserves (fractions allowed, e.g. 0.25 shares one GPU by 4)
    :param max_failures: how often Tune restarts a failed trial (e.g. a dead worker) before giving up
    :param local_cpus: CPUs of a local Ray (None: all of this machine); ignored with ``address``
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_failures: int = 2
    local_cpus: int | None = None


@dataclass
class Cell:
    """
    One (env, algorithm, seed[, hyperparameters]) cell of a grid.

    :param name: unique name, also the run directory's (``<env>__<algo>__s<seed>``)
    :param exp: the resolved experiment
    :param run_dir: its run directory
    :param log: the file that receives the trial's output
    :param command: the ``train.py`` command that repeats the cell, recorded in config.yml
    """

    name: str
    exp: Experiment
    run_dir: Path
    log: Path
    command: list[str] = field(default_factory=list)


class TuneReportCallback(BaseCallback):
    """
    Report every evaluation to Ray Tune, with a small Tune checkpoint whenever the run saved a new
    SB3 checkpoint. Runs as EvalCallback's ``callback_after_eval`` (its ``parent``).

    Reported metrics: ``timesteps``, ``eval_return`` (this evaluation's mean return), ``mmer`` (best
    so far), ``success_rate`` (where the env reports success) and ``score`` (the run's headline
    metric so far: MMER, or the latest success rate).

    :param run_dir: the run directory (for its checkpoints)
    :param metric: the headline metric, ``mmer`` or ``success_rate``
    """

    def __init__(self, run_dir: Path, metric: str) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.metric = metric
        self._last_ckpt = -1

    def _on_step(self) -> bool:
        from ray import tune

        eval_cb = self.parent
        assert eval_cb is not None, "TuneReportCallback must be an EvalCallback's callback_after_eval"
        means = [float(np.mean(r)) for r in eval_cb.evaluations_results]
        metrics: dict[str, Any] = {
            "timesteps": int(eval_cb.evaluations_timesteps[-1]),
            "eval_return": means[-1],
            "mmer": max(means),
        }
        successes = getattr(eval_cb, "evaluations_successes", None)
        if successes:
            metrics["success_rate"] = float(np.mean(successes[-1]))
        metrics["score"] = metrics.get("success_rate") if self.metric == "success_rate" else metrics["mmer"]
        ckpts = list_checkpoints(self.run_dir)
        if ckpts and ckpts[-1][0] > self._last_ckpt:
            self._last_ckpt, path = ckpts[-1]
            with tempfile.TemporaryDirectory() as tmp:
                info = {"run_dir": str(self.run_dir), "timesteps": self._last_ckpt, "sb3_checkpoint": str(path)}
                (Path(tmp) / TUNE_CHECKPOINT_FILE).write_text(json.dumps(info))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)
        return True


def _record_attempt(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_and_report(cell: Cell, device: str, threads: int, attempts_dir: Path) -> dict[str, Any]:
    """
    Inside a Tune trial: record the attempt, then train, resume or return the cell, reporting each
    evaluation and, at the end, the run's summary.

    :param cell: the cell
    :param device: torch device of the run
    :param threads: torch CPU threads
    :param attempts_dir: where ``<cell>.jsonl`` records each attempt
    :return: the run's summary
    :raises RuntimeError: when the run did not finish (Tune then retries it)
    """
    import ray
    import torch
    from ray import tune

    restored = tune.get_checkpoint()
    restored_info = None
    if restored is not None:
        with restored.as_directory() as tmp:
            restored_info = json.loads((Path(tmp) / TUNE_CHECKPOINT_FILE).read_text())
    _record_attempt(
        attempts_dir / f"{cell.name}.jsonl",
        {
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "trial_id": tune.get_context().get_trial_id(),
            "restored_from_tune_checkpoint": restored_info,
        },
    )
    torch.set_num_threads(max(1, threads))
    cell.log.parent.mkdir(parents=True, exist_ok=True)
    with open(cell.log, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"$ {' '.join(cell.command)}  # Ray trial {tune.get_context().get_trial_id()} pid {os.getpid()}", flush=True)
        summary = run_cell_reporting(
            cell.exp,
            cell.run_dir,
            RunOptions(device=device, progress_bar=False, verbose=0, after_eval=TuneReportCallback(cell.run_dir, cell.exp.metric)),
            cell.command,
        )
    if summary.get("exit_code") != 0 or summary.get("status") != "finished":
        raise RuntimeError(f"{cell.name}: run ended with status {summary.get('status')!r}, exit code {summary.get('exit_code')}")
    final: dict[str, Any] = {"timesteps": int(summary["timesteps"]), "done": True}
    if summary.get("score") is not None:
        final["score"] = float(summary["score"])
    tune.report(final)
    return summary


def cell_trainable(config: dict[str, Any], cells: dict[str, Cell], device: str, threads: int, attempts_dir: str) -> None:
    """
    The Tune function trainable of one ``compare`` cell.

    :param config: ``{"cell": name}`` (the trial's point of the grid)
    :param cells: every cell by name (passed once through Ray's object store)
    :param device: torch device of the run
    :param threads: torch CPU threads
    :param attempts_dir: where ``<cell>.jsonl`` records each attempt
    """
    run_and_report(cells[config["cell"]], device, threads, Path(attempts_dir))


def _trial_name(trial: Any) -> str:
    return str(trial.config["cell"])


def _progress_callback(total: int, max_failures: int) -> Any:
    """A Tune callback that prints one line per trial event, as the local backend does per process."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.done = 0
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.started[trial.trial_id] = time.time()
            print(f"[{self.done}/{total}] started {_trial_name(trial)}", flush=True)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{self.done}/{total}] {_trial_name(trial)} failed; restarting it from its last checkpoint "
                  f"(up to {max_failures} restarts)", flush=True)  # fmt: skip

        def _end(self, trial: Any, state: str) -> None:
            self.done += 1
            elapsed = time.time() - self.started.get(trial.trial_id, time.time())
            score = (trial.last_result or {}).get("score")
            score_txt = f", score {score:.3f}" if isinstance(score, (int, float)) else ""
            print(f"[{self.done}/{total}] {_trial_name(trial)} {state} in {elapsed:.0f} s{score_txt}", flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, "finished")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, "FAILED")

    return Progress()


def init_ray(options: RayOptions) -> None:
    """
    Join the cluster at ``options.address``, or start a local Ray. Workers get this checkout on
    their ``PYTHONPATH`` (``agents/`` and ``envs/`` are not installed packages), so every node needs
    the checkout at the same path and the dependencies installed.

    :param options: the address and, for a local Ray, its CPU count
    """
    import ray

    # Tune warns on every small checkpoint of short trials; the checkpoints are a few bytes each.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # each trial's output goes to its log file
        "runtime_env": {"env_vars": {"PYTHONPATH": path}},
    }
    if options.address:
        ray.init(address=options.address, **kwargs)
    else:
        ray.init(num_cpus=options.local_cpus, **kwargs)


def run_cells(
    cells: Sequence[Cell],
    out: Path,
    options: RayOptions,
    device: str = "cpu",
    experiment_name: str | None = None,
) -> dict[str, str]:
    """
    Run the cells as Ray Tune trials (the cluster decides where; each reserves its CPUs and GPUs).

    :param cells: the cells to run (finished ones may be left out by the caller, or return at once)
    :param out: the comparison's output directory (shared by every node)
    :param options: cluster address, resources per trial, restarts
    :param device: torch device of each run
    :param experiment_name: Tune's experiment name (default ``sweep-<timestamp>``)
    :return: ``{cell name: "finished" or "failed: <error>"}``
    """
    if not cells:
        return {}
    from ray import tune

    init_ray(options)
    name = experiment_name or "sweep-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    by_name = {c.name: c for c in cells}
    trainable = tune.with_parameters(
        cell_trainable,
        cells=by_name,
        device=device,
        threads=max(1, int(options.cpus_per_run)),
        attempts_dir=str(out / "attempts"),
    )
    resources = {"cpu": options.cpus_per_run, "gpu": options.gpus_per_run}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"cell": tune.grid_search(list(by_name))},
        # reuse_actors: a worker process runs trial after trial, without re-importing torch and SB3 for each
        tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out / "ray"),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_progress_callback(len(cells), options.max_failures)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    status: dict[str, str] = {}
    for result in grid:
        cell_name = result.config["cell"]
        if result.error is not None:
            status[cell_name] = f"failed: {str(result.error).strip().splitlines()[-1][:200]}"
        else:
            status[cell_name] = "finished"
    for cell_name in by_name:
        status.setdefault(cell_name, "failed: no result")
    return status


def run_jobs_on_ray(jobs: Sequence[Any], out: Path, options: RayOptions, device: str) -> bool:
    """
    ``compare``'s job list on Ray: one trial per job that is not already finished; each job's
    ``returncode`` becomes 0 (finished) or 1 (failed after its restarts).

    :param jobs: :class:`agents.compare.Job` objects (``exp``, ``run_dir``, ``log``, ``command``, ``skipped``)
    :param out: the comparison's output directory (Tune's state goes to ``<out>/ray``)
    :param options: cluster address, resources per trial, restarts
    :param device: torch device of each run
    :return: False when the Tune run was stopped (Ctrl-C) before every job finished; rerunning resumes them
    """
    pending = [j for j in jobs if not j.skipped]
    cells = [Cell(j.run_dir.name, j.exp, j.run_dir, j.log, list(j.command)) for j in pending]
    where = options.address or f"a local Ray ({options.local_cpus or 'all'} CPUs)"
    print(f"Ray backend: {len(cells)} trials on {where}, {options.cpus_per_run:g} CPU and {options.gpus_per_run:g} GPU "
          f"each, up to {options.max_failures} restarts each", flush=True)  # fmt: skip
    status = run_cells(cells, out, options, device, experiment_name="compare-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    stopped = False
    for job, cell in zip(pending, cells):
        # The run directory decides, not Tune: a trial stopped by Ctrl-C ends without an error, unfinished.
        job.returncode = 0 if is_finished(job.run_dir, job.exp.hyperparams["n_timesteps"]) else 1
        if job.returncode and status.get(cell.name) == "finished":
            stopped = True
        elif job.returncode:
            print(f"{cell.name}: {status.get(cell.name)}", file=sys.stderr, flush=True)
    return not stopped


def ray_options(args: argparse.Namespace) -> RayOptions:
    """:return: the :class:`RayOptions` of parsed ``compare``/``tune`` flags (``--jobs`` sizes a local Ray)"""
    return RayOptions(
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        max_failures=args.max_failures,
        local_cpus=getattr(args, "jobs", None),
    )


def attempts(out: Path, cell_name: str) -> list[dict[str, Any]]:
    """
    :param out: the comparison's output directory
    :param cell_name: a cell's name
    :return: the recorded attempts of that cell's trial, oldest first
    """
    path = out / "attempts" / f"{cell_name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["Cell", "RayOptions", "TuneReportCallback", "attempts", "cell_trainable", "init_ray", "ray_options", "run_and_report", "run_cells", "run_jobs_on_ray"]

