"""Training, resuming and evaluating one run; the logic behind ``train.py``.

One run writes one directory (default ``runs/<env>__<algo>__s<seed>__<timestamp>``)::

    config.yml            resolved configuration: env, algo, seed, hyperparameters, command, package versions
    monitor/              training episodes, one ``<rank>.monitor.csv`` per env (SB3 Monitor format)
    evaluations.npz       EvalCallback's record: timesteps, results, ep_lengths (+ successes where the env reports them)
    tb/<algo>_0/          TensorBoard events (train/*, rollout/*, eval/*)
    checkpoints/          model_<steps>_steps.zip (+ model_vecnormalize_<steps>_steps.pkl)
    best_model.zip        the model of the best evaluation so far
    final_model.zip       the model at the end of training (+ vecnormalize.pkl when normalizing)
    summary.json          status, score (MMER or success rate), timesteps, wall time, env-steps/s, sessions
    eval/                 results of ``--eval-only`` runs on this run's models

A run stopped by Ctrl-C or SIGTERM saves a checkpoint and a summary with status ``interrupted``;
:func:`resume` continues it from its latest checkpoint into the same files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from agents.hyperparams import (
    HyperparamError,
    apply_overrides,
    load_hyperparams,
    parse_overrides,
    to_constructor_kwargs,
    validate_hyperparams,
    validate_policy_kwargs,
)
from agents.registry import AlgoSpec, get_algo

CONFIG_FILE = "config.yml"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "evaluations.npz"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "model"
MONITOR_DIR = "monitor"
TB_DIR = "tb"
FINAL_MODEL = "final_model.zip"
FINAL_VECNORM = "vecnormalize.pkl"
# Families whose tasks end in success or failure: reported as success rate, not MMER.
SUCCESS_FAMILIES = ("tmaze", "mikasa")
# Offset between training and evaluation seeds, so evaluation episodes are not the training ones.
EVAL_SEED_OFFSET = 10_000


class RunError(RuntimeError):
    """A user-facing problem with a run directory or model file (reported in one line, exit code 2)."""


@dataclass
class Experiment:
    """
    Everything that defines a run, resolved and validated.

    :param env: resolved env name
    :param env_requested: the name as the user typed it
    :param family: env family (popgym, tmaze, mikasa, gym)
    :param algo: registry name of the algorithm
    :param seed: random seed
    :param eval_env: resolved evaluation env name (the training env unless ``--eval-env``)
    :param hyperparams: the flat resolved hyperparameters (protocol + algorithm keywords)
    :param hp_overrides: the raw ``--hp`` items, recorded for reproducibility
    """

    env: str
    env_requested: str
    family: str
    algo: str
    seed: int
    eval_env: str
    hyperparams: dict[str, Any]
    hp_overrides: list[str] = field(default_factory=list)

    @property
    def spec(self) -> AlgoSpec:
        return get_algo(self.algo)

    @property
    def metric(self) -> str:
        """The headline metric: ``success_rate`` for tmaze/mikasa, ``mmer`` otherwise."""
        return "success_rate" if self.family in SUCCESS_FAMILIES else "mmer"


# --------------------------------------------------------------------------------------------
# resolution


def resolve_experiment(
    env: str,
    algo: str,
    seed: int = 0,
    hp: list[str] | None = None,
    eval_env: str | None = None,
    timesteps: int | None = None,
    n_envs: int | None = None,
    eval_freq: int | None = None,
    eval_episodes: int | None = None,
    prev_action: bool | None = None,
) -> Experiment:
    """
    Resolve names, load the preset and apply overrides (``--hp`` first, then the explicit flags).

    :param env: ``--env`` as typed
    :param algo: ``--algo``
    :param seed: ``--seed``
    :param hp: ``--hp`` items
    :param eval_env: ``--eval-env`` as typed, or None for the training env
    :param timesteps: ``--timesteps`` (overrides ``n_timesteps``)
    :param n_envs: ``--n-envs``
    :param eval_freq: ``--eval-freq`` in env steps
    :param eval_episodes: ``--eval-episodes``
    :param prev_action: False for ``--no-prev-action``
    :return: the experiment
    :raises UnknownAlgoError, envs.UnknownEnvError, HyperparamError: on bad input
    """
    import envs

    spec = get_algo(algo)  # algo first: its error is the cheaper one
    env_name = envs.resolve_env_name(env)
    eval_name = envs.resolve_env_name(eval_env) if eval_env else env_name
    family = envs.env_family(env_name)
    hyperparams = load_hyperparams(family, env_name, spec.name)
    validate_hyperparams(hyperparams, spec)
    hyperparams = apply_overrides(hyperparams, parse_overrides(hp), spec)
    for key, value in (
        ("n_timesteps", timesteps),
        ("n_envs", n_envs),
        ("eval_freq", eval_freq),
        ("eval_episodes", eval_episodes),
        ("prev_action", prev_action),
    ):
        if value is not None:
            hyperparams[key] = value
    _check_protocol(hyperparams)
    return Experiment(
        env=env_name,
        env_requested=env,
        family=family,
        algo=spec.name,
        seed=seed,
        eval_env=eval_name,
        hyperparams=hyperparams,
        hp_overrides=list(hp or []),
    )


def _check_protocol(hp: dict[str, Any]) -> None:
    for key in ("n_timesteps", "n_envs", "eval_episodes", "n_eval_envs"):
        if not isinstance(hp.get(key), int) or hp[key] < 1:
            raise HyperparamError(f"{key} must be a positive integer, got {hp.get(key)!r}")
    for key in ("eval_freq", "checkpoint_freq"):
        if not isinstance(hp.get(key), int) or hp[key] < 0:
            raise HyperparamError(f"{key} must be a non-negative integer (env steps), got {hp.get(key)!r}")
    if not isinstance(hp.get("env_kwargs"), dict):
        raise HyperparamError(f"env_kwargs must be a mapping, got {hp.get('env_kwargs')!r}")


# --------------------------------------------------------------------------------------------
# environments and models


def _normalize_kwargs(normalize: Any) -> dict[str, Any] | None:
    if not normalize:
        return None
    return dict(normalize) if isinstance(normalize, dict) else {}


def make_train_env(exp: Experiment, run_dir: Path, seed: int) -> Any:
    """
    :param exp: the experiment
    :param run_dir: the run directory (monitor files go to ``run_dir/monitor``)
    :param seed: seed of env 0 (env i gets seed + i inside ``envs.make_vec_env``)
    :return: the training VecEnv, wrapped in VecNormalize when the preset asks for it
    """
    import envs
    from stable_baselines3.common.vec_env import VecNormalize

    hp = exp.hyperparams
    venv = envs.make_vec_env(
        exp.env,
        n_envs=hp["n_envs"],
        seed=seed,
        prev_action=hp["prev_action"],
        env_kwargs=hp["env_kwargs"],
        monitor_dir=str(run_dir / MONITOR_DIR),
    )
    norm = _normalize_kwargs(hp.get("normalize"))
    if norm is not None:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99), **norm)
    return venv


def make_eval_env(exp: Experiment, seed: int, n_episodes: int, vecnormalize_path: Path | None = None) -> Any:
    """
    :param exp: the experiment (its ``eval_env`` is built)
    :param seed: seed of eval env 0
    :param n_episodes: episodes per evaluation; no more envs than that are built
    :param vecnormalize_path: saved VecNormalize statistics to load (``--eval-only``); during training
        the EvalCallback syncs them from the training env instead
    :return: the evaluation VecEnv
    """
    import envs
    from stable_baselines3.common.vec_env import VecNormalize

    hp = exp.hyperparams
    n_eval_envs = max(1, min(hp["n_eval_envs"], n_episodes))
    venv = envs.make_vec_env(
        exp.eval_env,
        n_envs=n_eval_envs,
        seed=seed,
        prev_action=hp["prev_action"],
        env_kwargs=hp["env_kwargs"],
        monitor_dir=None,
    )
    norm = _normalize_kwargs(hp.get("normalize"))
    if norm is not None:
        if vecnormalize_path is not None and vecnormalize_path.exists():
            venv = VecNormalize.load(str(vecnormalize_path), venv)
        else:
            venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99), **norm)
        venv.training = False
        venv.norm_reward = False  # report true returns
    return venv


def build_model(exp: Experiment, env: Any, run_dir: Path, device: str, verbose: int = 0) -> Any:
    """
    :param exp: the experiment
    :param env: the training VecEnv
    :param run_dir: where TensorBoard writes (``run_dir/tb``)
    :param device: torch device ("auto", "cpu", "cuda")
    :param verbose: SB3 verbosity
    :return: a new model of the experiment's algorithm
    """
    spec = exp.spec
    algo_class = spec.load_class()
    algo_kwargs, _ = to_constructor_kwargs(exp.hyperparams)
    policy = exp.hyperparams.get("policy") or spec.policy_for(env.observation_space)
    aliases = sorted(getattr(algo_class, "policy_aliases", {}))
    if policy not in aliases:
        raise HyperparamError(f"unknown policy {policy!r} for {spec.name}; valid: {', '.join(aliases)}")
    validate_policy_kwargs(exp.hyperparams.get("policy_kwargs") or {}, spec, policy)
    exp.hyperparams["policy"] = policy
    algo_kwargs.pop("policy", None)
    return algo_class(
        policy,
        env,
        seed=exp.seed,
        device=device,
        verbose=verbose,
        tensorboard_log=str(run_dir / TB_DIR),
        **algo_kwargs,
    )


# --------------------------------------------------------------------------------------------
# run directory bookkeeping


def default_run_name(exp: Experiment) -> str:
    """:return: ``<env>__<algo>__s<seed>__<YYYYmmdd-HHMMSS>``"""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{exp.env}__{exp.algo}__s{exp.seed}__{stamp}"


def package_versions() -> dict[str, str]:
    """:return: versions of Python, the libraries a result depends on, and the git commit of this checkout"""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "popgym", "elmur-sb3"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            versions["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
            versions["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so an interrupted write never leaves a truncated file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_config(run_dir: Path, exp: Experiment, extra: dict[str, Any]) -> None:
    """Write ``config.yml``: everything needed to rerun or resume, plus the package versions."""
    config = {
        "env": exp.env,
        "env_requested": exp.env_requested,
        "family": exp.family,
        "algo": exp.algo,
        "algo_class": exp.spec.class_path,
        "seed": exp.seed,
        "eval_env": exp.eval_env,
        "metric": exp.metric,
        "hyperparams": {k: v for k, v in exp.hyperparams.items() if not k.startswith("_")},
        "differs_because": exp.hyperparams.get("_differs_because", {}),
        "preset_files": exp.hyperparams.get("_sources", []),
        "hp_overrides": exp.hp_overrides,
        **extra,
        "versions": package_versions(),
    }
    tmp = run_dir / (CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(_jsonable(config), f, sort_keys=False)
    os.replace(tmp, run_dir / CONFIG_FILE)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    with open(path) as f:
        return yaml.safe_load(f)


def experiment_from_config(config: dict[str, Any]) -> Experiment:
    """Rebuild the :class:`Experiment` recorded in a run's ``config.yml``."""
    return Experiment(
        env=config["env"],
        env_requested=config.get("env_requested", config["env"]),
        family=config["family"],
        algo=config["algo"],
        seed=int(config["seed"]),
        eval_env=config.get("eval_env", config["env"]),
        hyperparams=dict(config["hyperparams"]),
        hp_overrides=list(config.get("hp_overrides", [])),
    )


_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """:return: ``(timesteps, path)`` of every model checkpoint, oldest first"""
    found = []
    for path in (run_dir / CHECKPOINT_DIR).glob("*.zip"):
        match = _CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_vecnormalize(model_path: Path) -> Path | None:
    """:return: the VecNormalize statistics saved with a model file, if any"""
    match = _CKPT_RE.match(model_path.name)
    if match:
        candidate = model_path.parent / f"{CHECKPOINT_PREFIX}_vecnormalize_{match.group(1)}_steps.pkl"
    else:
        candidate = model_path.parent / FINAL_VECNORM
    return candidate if candidate.exists() else None


def save_checkpoint(model: Any, run_dir: Path) -> Path:
    """Save model (+ VecNormalize) under the same names CheckpointCallback uses, so resume finds it."""
    ckpt_dir = run_dir / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps.zip"
    model.save(str(path))
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:
        vecnorm.save(str(ckpt_dir / f"{CHECKPOINT_PREFIX}_vecnormalize_{model.num_timesteps}_steps.pkl"))
    return path


def load_evaluations(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = run_dir / EVAL_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


# Monitor files -------------------------------------------------------------------------------
# SB3's Monitor truncates its file when created. To make a resumed run *append* to the same
# ``<rank>.monitor.csv``, the old files are set aside before the envs are built and merged back
# (rows of the new session after the old ones, times shifted to the old file's t_start) once the
# envs are closed. A leftover ``.prev`` (a session killed without cleanup) is merged first.


def _read_monitor(path: Path) -> tuple[str, float, list[str], list[list[str]]]:
    with open(path, newline="") as f:
        first = f.readline()
        header = json.loads(first[1:]) if first.startswith("#") else {}
        reader = csv.reader(f)
        columns = next(reader, [])
        rows = [row for row in reader if row]
    return first, float(header.get("t_start", 0.0)), columns, rows


def _merge_monitor(old: Path, new: Path, dest: Path) -> None:
    first, t0_old, columns, rows_old = _read_monitor(old)
    _, t0_new, columns_new, rows_new = _read_monitor(new)
    shift = t0_new - t0_old
    t_idx = columns_new.index("t") if "t" in columns_new else None
    if t_idx is not None:
        for row in rows_new:
            row[t_idx] = f"{float(row[t_idx]) + shift:.6f}"
    if columns_new and columns_new != columns:
        # Same env and wrappers on resume, so this does not happen; keep the old columns anyway.
        rows_new = [[dict(zip(columns_new, r)).get(c, "") for c in columns] for r in rows_new]
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    with open(tmp, "w", newline="\n") as f:
        f.write(first)
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows_old + rows_new)
    os.replace(tmp, dest)


def stash_monitor_files(monitor_dir: Path) -> None:
    """Before a resumed session builds its envs: move ``X.monitor.csv`` to ``X.monitor.csv.prev``."""
    for path in sorted(monitor_dir.glob("*.monitor.csv")):
        prev = path.with_name(path.name + ".prev")
        if prev.exists():
            _merge_monitor(prev, path, prev)
            path.unlink()
        else:
            os.replace(path, prev)


def merge_monitor_files(monitor_dir: Path) -> None:
    """After the envs are closed: append each session's rows to the stashed file of the same env."""
    for prev in sorted(monitor_dir.glob("*.monitor.csv.prev")):
        current = prev.with_name(prev.name[: -len(".prev")])
        if current.exists():
            _merge_monitor(prev, current, current)
            prev.unlink()
        else:
            os.replace(prev, current)


# --------------------------------------------------------------------------------------------
# signals


class _Interrupted(KeyboardInterrupt):
    """Raised from the signal handler of :func:`interruptible`, so SIGTERM takes the same path as Ctrl-C."""


@contextmanager
def interruptible() -> Iterator[dict[str, int]]:
    """
    Turn SIGINT and SIGTERM into a KeyboardInterrupt for the duration and record which signal
    arrived, so the run can exit with 128 + signal number. SIGINT is installed explicitly: a shell
    starts background jobs (``cmd &``) with SIGINT ignored, and a run started that way, or by a
    ``compare`` started that way, must still save its checkpoint when ``compare`` forwards Ctrl-C.

    :return: a dict whose ``signal`` entry is set when a signal arrived
    """
    received: dict[str, int] = {}
    in_main = _is_main_thread()

    def handler(signum: int, frame: Any) -> None:
        received["signal"] = signum
        raise _Interrupted()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        yield received
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while saving, so a second Ctrl-C cannot leave half-written files."""
    if not _is_main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------------------------
# summary


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


def print_summary(summary: dict[str, Any]) -> None:
    """Print the closing summary (plain text, so it reads the same in a log file)."""
    label = {"mmer": "MMER (best mean eval return)", "success_rate": "success rate (last eval)"}[summary["metric"]]
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


# --------------------------------------------------------------------------------------------
# training


@dataclass
class RunOptions:
    """
    Per-session settings that are not part of the experiment.

    :param device: torch device
    :param progress_bar: show SB3's progress bar (tqdm + rich)
    :param verbose: SB3 verbosity (0: only the evaluation lines and the summary)
    """

    device: str = "auto"
    progress_bar: bool = True
    verbose: int = 0


def _make_callbacks(exp: Experiment, model: Any, run_dir: Path, eval_env: Any, progress_bar: bool) -> tuple[Any, Any, Any]:
    """:return: (the EvalCallback, the progress bar callback or None, the CallbackList to pass to learn)"""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback, ProgressBarCallback

    hp = exp.hyperparams
    n_envs = hp["n_envs"]
    # Frequencies are given in env steps over all envs; the callbacks count VecEnv steps.
    eval_cb = EvalCallback(
        eval_env,
        n_eval_episodes=hp["eval_episodes"],
        eval_freq=max(hp["eval_freq"] // n_envs, 1) if hp["eval_freq"] > 0 else 0,
        log_path=str(run_dir),  # EvalCallback appends "evaluations(.npz)"
        best_model_save_path=str(run_dir),
        deterministic=hp["eval_deterministic"],
        verbose=1,
        # n_eval_envs > 1 is fine here: evaluate_policy passes state/episode_start to predict.
        warn=False,
    )
    callbacks = [eval_cb]
    if hp["checkpoint_freq"] > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(hp["checkpoint_freq"] // n_envs, 1),
                save_path=str(run_dir / CHECKPOINT_DIR),
                name_prefix=CHECKPOINT_PREFIX,
                save_vecnormalize=True,
            )
        )
    # Built here rather than by learn(progress_bar=True), so an interrupted run can close the bar
    # (the rich display would otherwise swallow the closing summary).
    pbar_cb = ProgressBarCallback() if progress_bar else None
    if pbar_cb is not None:
        callbacks.append(pbar_cb)
    return eval_cb, pbar_cb, CallbackList(callbacks)


def _restore_evaluations(eval_cb: Any, run_dir: Path, upto: int) -> None:
    """Preload EvalCallback with the evaluations recorded up to ``upto`` steps, so it appends to them."""
    evals = load_evaluations(run_dir)
    if not evals:
        return
    keep = np.asarray(evals["timesteps"]) <= upto
    eval_cb.evaluations_timesteps = [int(t) for t in np.asarray(evals["timesteps"])[keep]]
    eval_cb.evaluations_results = [list(r) for r in np.asarray(evals["results"])[keep]]
    eval_cb.evaluations_length = [list(r) for r in np.asarray(evals["ep_lengths"])[keep]]
    if "successes" in evals:
        eval_cb.evaluations_successes = [list(r) for r in np.asarray(evals["successes"])[keep]]
    if eval_cb.evaluations_results:
        eval_cb.best_mean_reward = float(max(np.mean(r) for r in eval_cb.evaluations_results))
        eval_cb.last_mean_reward = float(np.mean(eval_cb.evaluations_results[-1]))


def _final_evaluation(eval_cb: Any, model: Any) -> None:
    """Evaluate the final policy unless the last periodic evaluation already did, so every run has a score."""
    if eval_cb.evaluations_timesteps and eval_cb.evaluations_timesteps[-1] == model.num_timesteps:
        return
    if eval_cb.model is None:
        eval_cb.init_callback(model)
    eval_cb.eval_freq = 1  # EvalCallback evaluates when n_calls % eval_freq == 0
    eval_cb.on_step()


def _run_session(
    exp: Experiment,
    model: Any,
    run_dir: Path,
    eval_env: Any,
    target: int,
    options: RunOptions,
    sessions: list[dict[str, Any]],
    callbacks: tuple[Any, Any, Any],
) -> int:
    """Train to ``target`` timesteps, handling interruption; write summary.json. :return: exit code"""
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
            _final_evaluation(eval_cb, model)
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
            model.save(str(run_dir / FINAL_MODEL))
            vecnorm = model.get_vec_normalize_env()
            if vecnorm is not None:
                vecnorm.save(str(run_dir / FINAL_VECNORM))
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
    return exit_code


def check_trained_agent(model_path: Path, algo: str) -> Path:
    """
    :param model_path: ``--trained-agent``, a model zip saved by ``algo``
    :param algo: the algorithm of the new run
    :return: the resolved path
    :raises RunError: when the file is missing or was saved by another algorithm
    """
    path = Path(model_path).expanduser().resolve()
    if not path.is_file():
        raise RunError(f"--trained-agent {model_path}: no such model file (expected a .zip saved by train.py or model.save)")
    saved_by = _algo_from_zip(path)
    if saved_by is None:
        raise RunError(f"--trained-agent {model_path}: not an SB3 model zip (expected a .zip saved by train.py or model.save)")
    if saved_by != algo:
        raise RunError(f"--trained-agent {model_path} was saved by {saved_by}, but this run trains {algo}; pass --algo {saved_by}")
    return path


def load_trained_agent(model: Any, model_path: Path) -> None:
    """
    Start ``model`` from the weights of a saved model, keeping the new run's env and
    hyperparameters (rl-zoo3's ``--trained-agent``): a curriculum step, e.g. tmaze-30 then tmaze-100.
    The policy weights and the optimiser's state carry over (SB3's ``set_parameters``); the
    learning rate and everything else come from the new run's preset and ``--hp``.
    VecNormalize statistics saved with the model replace the new run's initial ones.

    :param model: the freshly built model of the new run
    :param model_path: a zip checked by :func:`check_trained_agent`
    """
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        model.set_parameters(str(model_path), exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"--trained-agent {model_path}: its network does not match this run's policy ({first}); "
            "use the same policy_kwargs as the run that saved it"
        ) from exc
    saved_stats = checkpoint_vecnormalize(model_path)
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None and saved_stats is not None:
        loaded = VecNormalize.load(str(saved_stats), model.get_env())
        vecnorm.obs_rms, vecnorm.ret_rms = loaded.obs_rms, loaded.ret_rms


def train(
    exp: Experiment,
    out: Path,
    run_name: str | None,
    options: RunOptions,
    argv: list[str],
    trained_agent: Path | None = None,
) -> int:
    """
    Train a new run.

    :param exp: the resolved experiment
    :param out: parent directory of run directories
    :param run_name: run directory name, or None for :func:`default_run_name`
    :param options: device, progress bar, verbosity
    :param argv: the command line, recorded in config.yml
    :param trained_agent: a saved model of the same algorithm and network to start from
        (``--trained-agent``), or None for fresh weights
    :return: exit code (0 finished, 128 + signal number when interrupted)
    """
    run_dir = (out / (run_name or default_run_name(exp))).resolve()
    if (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it, or another --out/--run-name")
    spec = exp.spec
    spec.load_class()  # fail on a missing library before creating anything
    if trained_agent is not None:
        trained_agent = check_trained_agent(trained_agent, exp.algo)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_env = make_train_env(exp, run_dir, exp.seed)
    eval_env = None
    try:
        eval_env = make_eval_env(exp, exp.seed + EVAL_SEED_OFFSET, exp.hyperparams["eval_episodes"])
        model = build_model(exp, train_env, run_dir, options.device, options.verbose)
        extra = {"command": argv, "device": str(model.device), "run_dir": str(run_dir)}
        if trained_agent is not None:
            load_trained_agent(model, trained_agent)
            extra["trained_agent"] = str(trained_agent)
        write_config(run_dir, exp, extra)
        callbacks = _make_callbacks(exp, model, run_dir, eval_env, options.progress_bar)
        print(f"run dir: {run_dir}\n{exp.algo} ({exp.hyperparams['policy']}) on {exp.env}, seed {exp.seed}, "
              f"{exp.hyperparams['n_timesteps']:,} steps, {exp.hyperparams['n_envs']} envs", flush=True)
        return _run_session(exp, model, run_dir, eval_env, exp.hyperparams["n_timesteps"], options, [], callbacks)
    except BaseException:
        # A run that failed before its config existed leaves nothing worth keeping.
        if not (run_dir / CONFIG_FILE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        _close(train_env, eval_env)


def _close(*venvs: Any) -> None:
    for venv in venvs:
        if venv is not None:
            try:
                venv.close()
            except Exception:  # noqa: BLE001 - closing after an interrupt must not mask the summary
                pass


def latest_model(run_dir: Path) -> tuple[int, Path]:
    """
    :param run_dir: a run directory
    :return: ``(timesteps, path)`` of the newest saved model (checkpoints; every session ends with one)
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise RunError(f"{run_dir} has no checkpoint in {CHECKPOINT_DIR}/ to resume from")
    return ckpts[-1]


def resume(run_dir: Path, options: RunOptions, timesteps: int | None = None) -> int:
    """
    Continue a run from its latest checkpoint: the timestep count continues
    (``reset_num_timesteps=False``), evaluations.npz, the monitor files and the TensorBoard run are
    appended to.

    :param run_dir: the run directory
    :param options: device, progress bar, verbosity
    :param timesteps: a new total budget (default: the recorded one)
    :return: exit code
    """
    run_dir = run_dir.resolve()
    config = read_config(run_dir)
    exp = experiment_from_config(config)
    if timesteps is not None:
        exp.hyperparams["n_timesteps"] = timesteps
    steps, ckpt = latest_model(run_dir)
    target = exp.hyperparams["n_timesteps"]
    summary_path = run_dir / SUMMARY_FILE
    sessions = json.loads(summary_path.read_text()).get("sessions", []) if summary_path.exists() else []
    if steps >= target:
        print(f"{run_dir} already reached {steps:,} of {target:,} timesteps; pass --timesteps to extend it.")
        return 0
    spec = exp.spec
    algo_class = spec.load_class()
    monitor_dir = run_dir / MONITOR_DIR
    stash_monitor_files(monitor_dir)
    # A fresh seed per session: resuming must not replay the episodes the run already saw.
    session_seed = exp.seed + 7919 * (len(sessions) + 1)
    train_env = eval_env = None
    try:
        train_env = make_train_env(exp, run_dir, session_seed)
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
        callbacks = _make_callbacks(exp, model, run_dir, eval_env, options.progress_bar)
        _restore_evaluations(callbacks[0], run_dir, model.num_timesteps)
        config.setdefault("resumed", []).append(
            {"at": _dt.datetime.now().isoformat(timespec="seconds"), "from": str(ckpt), "target_timesteps": target, "command": sys.argv}
        )
        config["hyperparams"]["n_timesteps"] = target
        tmp = run_dir / (CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:
            yaml.safe_dump(_jsonable(config), f, sort_keys=False)
        os.replace(tmp, run_dir / CONFIG_FILE)
        print(f"resuming {run_dir} from {ckpt.name} ({model.num_timesteps:,} -> {target:,} steps)", flush=True)
        return _run_session(exp, model, run_dir, eval_env, target, options, sessions, callbacks)
    finally:
        _close(train_env, eval_env)
        merge_monitor_files(monitor_dir)


# --------------------------------------------------------------------------------------------
# evaluation only


def _find_run_dir(model_path: Path) -> Path | None:
    for parent in (model_path.parent, model_path.parent.parent):
        if (parent / CONFIG_FILE).exists():
            return parent
    return None


def _algo_from_zip(model_path: Path) -> str | None:
    """Read the policy class recorded in an SB3 zip to tell which algorithm saved it."""
    import zipfile

    try:
        with zipfile.ZipFile(model_path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for prefix, name in (("elmur_sb3", "ppo-elmur"), ("sb3_contrib", "ppo-lstm"), ("stable_baselines3", "ppo")):
        if module.startswith(prefix):
            return name
    return None


def evaluate_only(
    model_path: Path,
    options: RunOptions,
    env: str | None = None,
    eval_env: str | None = None,
    algo: str | None = None,
    eval_episodes: int | None = None,
    seed: int | None = None,
    hp: list[str] | None = None,
    out: Path | None = None,
    prev_action: bool | None = None,
) -> int:
    """
    Evaluate a saved model and write the result as JSON.

    The env, algorithm and protocol come from the run's config.yml when the model lies in a run
    directory (``final_model.zip``, ``best_model.zip``, ``checkpoints/*.zip``); flags override them.

    :param model_path: the model zip
    :param options: device
    :param env: training env name (needed only without a run directory)
    :param eval_env: the env to evaluate on (default: the run's eval env)
    :param algo: algorithm name (default: from config.yml or from the zip)
    :param eval_episodes: number of episodes (default: the preset's)
    :param seed: evaluation seed (default: the run's seed + 10000)
    :param hp: ``--hp`` overrides (protocol keys such as env_kwargs, n_eval_envs, eval_deterministic)
    :param out: directory for the result JSON (default: ``<run dir>/eval`` or next to the model)
    :param prev_action: False for ``--no-prev-action`` (only without a run directory)
    :return: exit code
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    if not model_path.exists():
        raise RunError(f"--eval-only: no such model file: {model_path}")
    model_path = model_path.resolve()
    run_dir = _find_run_dir(model_path)
    if run_dir is not None:
        config = read_config(run_dir)
        if algo is not None and get_algo(algo).name != config["algo"]:
            raise RunError(f"--algo {algo} does not match the run's algo {config['algo']}")
        exp = experiment_from_config(config)
        if eval_env is not None or env is not None:
            import envs

            exp.eval_env = envs.resolve_env_name(eval_env or env)
        if hp:
            exp.hyperparams = apply_overrides(exp.hyperparams, parse_overrides(hp), exp.spec)
        if prev_action is not None:
            exp.hyperparams["prev_action"] = prev_action
    else:
        algo = algo or _algo_from_zip(model_path)
        if algo is None:
            raise RunError(f"cannot tell which algorithm saved {model_path.name}; pass --algo")
        if env is None and eval_env is None:
            raise RunError("--eval-only outside a run directory needs --env (or --eval-env)")
        exp = resolve_experiment(env or eval_env, algo, seed=seed or 0, hp=hp, eval_env=eval_env, prev_action=prev_action)
    if eval_episodes is not None:
        exp.hyperparams["eval_episodes"] = eval_episodes
    n_episodes = exp.hyperparams["eval_episodes"]
    eval_seed = seed if seed is not None else exp.seed + EVAL_SEED_OFFSET
    venv = make_eval_env(exp, eval_seed, n_episodes, vecnormalize_path=checkpoint_vecnormalize(model_path))
    try:
        model = exp.spec.load_class().load(str(model_path), device=options.device)
        successes: list[float] = []
        # Long corridors (tmaze-1000000) take minutes: report progress every 30 s.
        progress = {"calls": 0, "last": time.time()}

        def collect_success(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
            if locals_["done"]:
                info = locals_["info"]
                if "is_success" in info:
                    successes.append(float(info["is_success"]))
            progress["calls"] += 1  # once per env per step
            if progress["calls"] % 1000 == 0 and time.time() - progress["last"] > 30:
                progress["last"] = time.time()
                finished = int(np.sum(locals_["episode_counts"]))
                print(f"  ... {progress['calls']:,} env steps, {finished}/{n_episodes} episodes done", flush=True)

        print(f"evaluating {model_path} on {exp.eval_env}: {n_episodes} episodes ...", flush=True)
        started = time.time()
        returns, lengths = evaluate_policy(
            model,
            venv,
            n_eval_episodes=n_episodes,
            deterministic=exp.hyperparams.get("eval_deterministic", True),
            return_episode_rewards=True,
            warn=False,
            callback=collect_success,
        )
        wall = time.time() - started
    finally:
        _close(venv)
    returns_arr = np.asarray(returns, dtype=float)
    result = {
        "model": str(model_path),
        "algo": exp.algo,
        "train_env": exp.env,
        "eval_env": exp.eval_env,
        "episodes": int(len(returns_arr)),
        "deterministic": bool(exp.hyperparams.get("eval_deterministic", True)),
        "seed": int(eval_seed),
        "mean_return": float(returns_arr.mean()),
        "std_return": float(returns_arr.std()),
        "mean_length": float(np.mean(lengths)),
        "success_rate": float(np.mean(successes)) if successes else None,
        "returns": returns_arr.tolist(),
        "lengths": [int(x) for x in lengths],
        "wall_time_s": round(wall, 2),
        "env_steps_per_s": float(np.sum(lengths) / wall) if wall > 0 else None,
        "versions": package_versions(),
    }
    dest_dir = out or ((run_dir / "eval") if run_dir is not None else model_path.parent)
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = dest_dir / f"eval__{model_path.stem}__{exp.eval_env}__{stamp}.json"
    write_json(dest, result)
    line = f"{exp.eval_env}: mean return {result['mean_return']:.3f} +/- {result['std_return']:.3f} over {result['episodes']} episodes"
    if result["success_rate"] is not None:
        line += f", success rate {result['success_rate']:.3f}"
    print(line + f" ({wall:.1f} s)\nwritten: {dest}", flush=True)
    return 0


__all__ = [
    "Experiment",
    "RunError",
    "RunOptions",
    "evaluate_only",
    "resolve_experiment",
    "resume",
    "summarize_evaluations",
    "train",
]
