"""Training sessions: a new run, a resumed run, and :func:`run_cell`, the one entry that ``train.py`` and every ``compare`` cell call to train into a run directory.

A session trains to its target, evaluates the final policy, saves a checkpoint (and the final model
when it finished) and writes ``summary.json``. A session stopped by Ctrl-C or SIGTERM saves a
checkpoint and a summary with status ``interrupted``; :func:`resume` continues it from its latest
checkpoint into the same files.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback

from agents.build import build_model, check_model_zip, load_trained_agent, make_eval_env, make_train_env
from agents.experiment import Experiment, experiment_from_config
from agents.rundir import (
    CHECKPOINT_DIR,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    FINAL_MODEL,
    MONITOR_DIR,
    SUMMARY_FILE,
    TB_DIR,
    RunError,
    checkpoint_vecnormalize,
    is_finished,
    latest_model,
    list_checkpoints,
    load_evaluations,
    merge_monitor_files,
    read_config,
    read_summary,
    save_checkpoint,
    save_final_model,
    stash_monitor_files,
    write_config,
    write_json,
    write_yaml,
)
from agents.scores import METRIC_LABELS, summarize_evaluations
from agents.signals import interruptible, signals_ignored

# Offset between training and evaluation seeds, so evaluation episodes are not the training ones.
EVAL_SEED_OFFSET = 10_000


@dataclass
class RunOptions:
    """
    Per-session settings that are not part of the experiment.

    :param device: torch device
    :param progress_bar: show SB3's progress bar (tqdm + rich)
    :param verbose: SB3 verbosity (0: only the evaluation lines and the summary)
    :param after_eval: an SB3 callback the evaluation callback runs after every evaluation (its
        ``callback_after_eval``; its ``parent`` is the EvalCallback), e.g. one that reports to Ray Tune
    """

    device: str = "auto"
    progress_bar: bool = True
    verbose: int = 0
    after_eval: BaseCallback | None = None


class RunEvalCallback(EvalCallback):
    """SB3's EvalCallback, which can also continue a resumed run's record and evaluate on demand, and writes ``evaluations.npz`` whole or not at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._record_path: str | None = None
        if self.log_path is not None:
            # np.savez writes "<log_path>.npz" in place; write a partial file and rename it after each evaluation,
            # so a process killed mid-write (a lost node) leaves the previous record intact.
            self._record_path = self.log_path + ".npz"
            self.log_path = self.log_path + ".partial"

    def _on_step(self) -> bool:
        before = len(self.evaluations_timesteps)
        continue_training = super()._on_step()
        if self._record_path is not None and len(self.evaluations_timesteps) > before:
            os.replace(self.log_path + ".npz", self._record_path)
        return continue_training

    def restore(self, evals: dict[str, np.ndarray] | None, upto: int) -> None:
        """
        Continue the record of ``evaluations.npz`` up to ``upto`` timesteps, so new evaluations are appended to it.

        :param evals: the run's evaluations (:func:`agents.rundir.load_evaluations`)
        :param upto: the timestep count of the checkpoint the run resumes from
        """
        if not evals:
            return
        keep = np.asarray(evals["timesteps"]) <= upto
        self.evaluations_timesteps = [int(t) for t in np.asarray(evals["timesteps"])[keep]]
        self.evaluations_results = [list(r) for r in np.asarray(evals["results"])[keep]]
        self.evaluations_length = [list(r) for r in np.asarray(evals["ep_lengths"])[keep]]
        if "successes" in evals:
            self.evaluations_successes = [list(r) for r in np.asarray(evals["successes"])[keep]]
        if self.evaluations_results:
            self.best_mean_reward = float(max(np.mean(r) for r in self.evaluations_results))
            self.last_mean_reward = float(np.mean(self.evaluations_results[-1]))

    def evaluate_final(self, model: Any) -> None:
        """Evaluate ``model`` now unless the last periodic evaluation already saw it, so every run has a score."""
        if self.evaluations_timesteps and self.evaluations_timesteps[-1] == model.num_timesteps:
            return
        if self.model is None:
            self.init_callback(model)
        every = self.eval_freq
        self.eval_freq = 1  # EvalCallback evaluates when n_calls % eval_freq == 0
        try:
            self.on_step()
        finally:
            self.eval_freq = every


class RunCheckpointCallback(CheckpointCallback):
    """SB3's CheckpointCallback, saving through :func:`agents.rundir.save_checkpoint` (same names), whose files appear whole or not at all."""

    def __init__(self, save_freq: int, run_dir: Path) -> None:
        super().__init__(save_freq, str(run_dir / CHECKPOINT_DIR), name_prefix=CHECKPOINT_PREFIX, save_vecnormalize=True)
        self.run_dir = run_dir

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            save_checkpoint(self.model, self.run_dir)
        return True


def _make_callbacks(exp: Experiment, run_dir: Path, eval_env: Any, options: RunOptions) -> tuple[RunEvalCallback, Any, Any]:
    """:return: (the evaluation callback, the progress bar callback or None, the CallbackList to pass to learn)"""
    from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback

    hp = exp.hyperparams
    n_envs = hp["n_envs"]
    # Frequencies are given in env steps over all envs; the callbacks count VecEnv steps.
    eval_cb = RunEvalCallback(
        eval_env,
        n_eval_episodes=hp["eval_episodes"],
        eval_freq=max(hp["eval_freq"] // n_envs, 1) if hp["eval_freq"] > 0 else 0,
        callback_after_eval=options.after_eval,
        log_path=str(run_dir),  # EvalCallback appends "evaluations(.npz)"
        best_model_save_path=str(run_dir),
        deterministic=hp["eval_deterministic"],
        verbose=1,
        # n_eval_envs > 1 is fine here: evaluate_policy passes state/episode_start to predict.
        warn=False,
    )
    callbacks = [eval_cb]
    if hp["checkpoint_freq"] > 0:
        callbacks.append(RunCheckpointCallback(max(hp["checkpoint_freq"] // n_envs, 1), run_dir))
    # Built here rather than by learn(progress_bar=True), so an interrupted run can close the bar
    # (the rich display would otherwise swallow the closing summary).
    pbar_cb = ProgressBarCallback() if options.progress_bar else None
    if pbar_cb is not None:
        callbacks.append(pbar_cb)
    return eval_cb, pbar_cb, CallbackList(callbacks)


def print_summary(summary: dict[str, Any]) -> None:
    """Print the closing summary (plain text, so it reads the same in a log file)."""
    label = METRIC_LABELS[summary["metric"]]
    score = summary.get("score")
    lines = [
        "",
        "=" * 72,
        f"  {summary['env']} | {summary['algo']} | seed {summary['seed']} | status: {summary['status']}",
        f"  {label}: {score:.3f}" if score is not None else f"  {label}: n/a (no evaluation ran)",
    ]
    if summary.get("n_evaluations"):
        lines.append(
            f"  evaluations: {summary['n_evaluations']}, last mean return {summary['last_mean_return']:.3f} "
            f"at {summary['last_eval_timesteps']:,} steps"
        )
    lines += [
        f"  timesteps: {summary['timesteps']:,} / {summary['target_timesteps']:,}",
        f"  wall time: {summary['wall_time_s']:.1f} s, {summary['env_steps_per_s']:.0f} env-steps/s",
        f"  run dir:   {summary['run_dir']}",
    ]
    if summary["status"] == "interrupted":
        lines.append(f"  continue:  python train.py --resume {summary['run_dir']}")
    else:
        lines.append(f"  evaluate:  python train.py --eval-only {Path(summary['run_dir']) / FINAL_MODEL}")
    lines.append(f"  curves:    tensorboard --logdir {Path(summary['run_dir']) / TB_DIR}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def _run_session(
    exp: Experiment,
    model: Any,
    run_dir: Path,
    target: int,
    sessions: list[dict[str, Any]],
    callbacks: tuple[RunEvalCallback, Any, Any],
) -> dict[str, Any]:
    """
    Train to ``target`` timesteps, handling interruption; write summary.json.

    :return: the summary, plus ``exit_code`` (0 finished, 128 + signal number when interrupted)
    """
    eval_cb, pbar_cb, callback = callbacks
    start_steps = model.num_timesteps
    started = time.time()
    status = "finished"
    exit_code = 0
    with interruptible() as received:
        try:
            remaining = target - model.num_timesteps
            if remaining > 0:
                model.learn(
                    total_timesteps=remaining,
                    callback=callback,
                    reset_num_timesteps=False,
                    progress_bar=False,  # our own ProgressBarCallback is in `callback`
                    tb_log_name=exp.algo,
                )
            eval_cb.evaluate_final(model)
        except KeyboardInterrupt:
            if pbar_cb is not None and getattr(pbar_cb, "pbar", None) is not None:
                try:
                    pbar_cb.pbar.close()
                except Exception:  # noqa: BLE001 - cosmetic only
                    pass
            status = "interrupted"
            exit_code = 128 + received.get("signal", signal.SIGINT)
            print(f"\n{signal.Signals(exit_code - 128).name} received: saving a checkpoint and the summary...", file=sys.stderr, flush=True)
    with signals_ignored():
        wall = time.time() - started
        if status == "finished":
            save_final_model(model, run_dir)
        ckpt = save_checkpoint(model, run_dir)
        sessions.append(
            {
                "started": _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                "wall_time_s": round(wall, 2),
                "timesteps_start": int(start_steps),
                "timesteps_end": int(model.num_timesteps),
                "status": status,
            }
        )
        total_wall = sum(s["wall_time_s"] for s in sessions)
        trained = sum(s["timesteps_end"] - s["timesteps_start"] for s in sessions)
        summary = {
            "env": exp.env,
            "algo": exp.algo,
            "seed": exp.seed,
            "eval_env": exp.eval_env,
            "status": status,
            "timesteps": int(model.num_timesteps),
            "target_timesteps": int(target),
            "wall_time_s": round(total_wall, 2),
            # Includes evaluation time: what a user waits for, per env step.
            "env_steps_per_s": trained / total_wall if total_wall > 0 else 0.0,
            **summarize_evaluations(load_evaluations(run_dir), exp.metric),
            "final_model": str(run_dir / FINAL_MODEL) if status == "finished" else None,
            "last_checkpoint": str(ckpt),
            "run_dir": str(run_dir),
            "sessions": sessions,
        }
        write_json(run_dir / SUMMARY_FILE, summary)
    print_summary(summary)
    return {**summary, "exit_code": exit_code}


def _close(*venvs: Any) -> None:
    for venv in venvs:
        if venv is not None:
            # A signal inside SubprocVecEnv.step_wait leaves ``waiting`` set after some workers' results
            # were read, and close() then waits for those forever. The step's results are not needed.
            inner = getattr(venv, "unwrapped", venv)
            if getattr(inner, "waiting", False):
                inner.waiting = False
            try:
                venv.close()
            except Exception:  # noqa: BLE001 - closing after an interrupt must not mask the summary
                pass


def train(
    exp: Experiment,
    run_dir: Path,
    options: RunOptions,
    command: list[str],
    trained_agent: Path | None = None,
) -> dict[str, Any]:
    """
    Train a new run.

    :param exp: the resolved experiment
    :param run_dir: the run directory to create
    :param options: device, progress bar, verbosity
    :param command: the command line, recorded in config.yml
    :param trained_agent: a saved model of the same algorithm and network to start from
        (``--trained-agent``), or None for fresh weights
    :return: the summary and ``exit_code`` (see :func:`_run_session`)
    """
    run_dir = run_dir.resolve()
    if (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it, or another --out/--run-name")
    exp.spec.load_class()  # fail on a missing library before creating anything
    if trained_agent is not None:
        trained_agent, _ = check_model_zip(trained_agent, exp.algo, "--trained-agent")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_env = make_train_env(exp, run_dir / MONITOR_DIR, exp.seed)
    eval_env = None
    try:
        exp = exp.with_policy(train_env.observation_space)
        eval_env = make_eval_env(exp, exp.seed + EVAL_SEED_OFFSET, exp.hyperparams["eval_episodes"])
        model = build_model(exp, train_env, run_dir / TB_DIR, options.device, options.verbose)
        extra = {"command": command, "device": str(model.device), "run_dir": str(run_dir)}
        if trained_agent is not None:
            load_trained_agent(model, trained_agent)
            extra["trained_agent"] = str(trained_agent)
        write_config(run_dir, exp, extra)
        callbacks = _make_callbacks(exp, run_dir, eval_env, options)
        print(f"run dir: {run_dir}\n{exp.algo} ({exp.hyperparams['policy']}) on {exp.env}, seed {exp.seed}, "
              f"{exp.hyperparams['n_timesteps']:,} steps, {exp.hyperparams['n_envs']} envs", flush=True)
        return _run_session(exp, model, run_dir, exp.hyperparams["n_timesteps"], [], callbacks)
    except BaseException:
        # A run that failed before its config existed leaves nothing worth keeping.
        if not (run_dir / CONFIG_FILE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        _close(train_env, eval_env)


def resume(run_dir: Path, options: RunOptions, timesteps: int | None = None, command: list[str] | None = None) -> dict[str, Any]:
    """
    Continue a run from its latest checkpoint: the timestep count continues
    (``reset_num_timesteps=False``), evaluations.npz, the monitor files and the TensorBoard run are
    appended to.

    :param run_dir: the run directory
    :param options: device, progress bar, verbosity
    :param timesteps: a new total budget (default: the recorded one)
    :param command: the command line, recorded in config.yml (default: ``sys.argv``)
    :return: the summary and ``exit_code`` (see :func:`_run_session`)
    """
    run_dir = run_dir.resolve()
    config = read_config(run_dir)
    exp = experiment_from_config(config)
    if timesteps is not None:
        exp.hyperparams["n_timesteps"] = timesteps
    steps, ckpt = latest_model(run_dir)
    target = exp.hyperparams["n_timesteps"]
    summary = read_summary(run_dir) or {}
    sessions = summary.get("sessions", [])
    if steps >= target:
        print(f"{run_dir} already reached {steps:,} of {target:,} timesteps; pass --timesteps to extend it.")
        return {**summary, "exit_code": 0}
    algo_class = exp.spec.load_class()
    monitor_dir = run_dir / MONITOR_DIR
    stash_monitor_files(monitor_dir)
    # A fresh seed per session: resuming must not replay the episodes the run already saw.
    session_seed = exp.seed + 7919 * (len(sessions) + 1)
    train_env = eval_env = None
    try:
        train_env = make_train_env(exp, monitor_dir, session_seed)
        vecnorm_path = checkpoint_vecnormalize(ckpt)
        if vecnorm_path is not None:
            from stable_baselines3.common.vec_env import VecNormalize

            train_env = VecNormalize.load(str(vecnorm_path), train_env.venv if isinstance(train_env, VecNormalize) else train_env)
        eval_env = make_eval_env(exp, session_seed + EVAL_SEED_OFFSET, exp.hyperparams["eval_episodes"])
        model = algo_class.load(str(ckpt), env=train_env, device=options.device)
        model.tensorboard_log = str(run_dir / TB_DIR)  # the directory may have moved since it was saved
        model.set_random_seed(session_seed)
        if model.num_timesteps != steps:
            warnings.warn(f"checkpoint name says {steps} steps, model says {model.num_timesteps}")
        callbacks = _make_callbacks(exp, run_dir, eval_env, options)
        callbacks[0].restore(load_evaluations(run_dir), model.num_timesteps)
        config.setdefault("resumed", []).append(
            {
                "at": _dt.datetime.now().isoformat(timespec="seconds"),
                "from": str(ckpt),
                "target_timesteps": target,
                "command": list(sys.argv if command is None else command),
            }
        )
        config["hyperparams"]["n_timesteps"] = target
        write_yaml(run_dir / CONFIG_FILE, config)
        print(f"resuming {run_dir} from {ckpt.name} ({model.num_timesteps:,} -> {target:,} steps)", flush=True)
        return _run_session(exp, model, run_dir, target, sessions, callbacks)
    finally:
        _close(train_env, eval_env)
        merge_monitor_files(monitor_dir)


def run_cell(
    exp: Experiment,
    run_dir: Path,
    options: RunOptions,
    command: list[str],
    trained_agent: Path | None = None,
    continue_existing: bool = False,
) -> dict[str, Any]:
    """
    Train one cell of a grid (an env, an algorithm, a seed, their overrides) into ``run_dir``, in this
    process; what ``train.py`` runs for one agent and every ``compare`` cell runs in its worker.

    :param exp: the resolved experiment (:func:`agents.experiment.resolve_experiment`)
    :param run_dir: the cell's run directory
    :param options: device, progress bar, verbosity
    :param command: the command line that repeats the cell, recorded in config.yml
    :param trained_agent: a saved model to start from (``--trained-agent``)
    :param continue_existing: what to do with a run already in ``run_dir``: False refuses it (a new
        ``train.py`` run); True returns the summary of a run finished at ``exp``'s budget, resumes one
        with a checkpoint to ``exp``'s budget, and starts afresh where no checkpoint was saved
        (``compare`` reruns, trial restarts)
    :return: the run's summary (as in summary.json) and ``exit_code``: 0 finished, 128 + signal number
        when interrupted
    :raises RunError: when ``run_dir`` already holds a run and ``continue_existing`` is False
    """
    target = exp.hyperparams["n_timesteps"]
    if continue_existing:
        if is_finished(run_dir, target):
            return {**(read_summary(run_dir) or {}), "exit_code": 0}
        if (run_dir / CONFIG_FILE).exists() and list_checkpoints(run_dir):
            return resume(run_dir, options, timesteps=target, command=command)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # started but never checkpointed: nothing to keep
    return train(exp, run_dir, options, command, trained_agent=trained_agent)
