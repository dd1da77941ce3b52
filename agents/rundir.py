"""The run directory: its file names, atomic writes of its config and summary, checkpoints, evaluations, and the monitor files a resumed run appends to.

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
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.experiment import Experiment

CONFIG_FILE = "config.yml"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "evaluations.npz"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "model"
MONITOR_DIR = "monitor"
TB_DIR = "tb"
FINAL_MODEL = "final_model.zip"
FINAL_VECNORM = "vecnormalize.pkl"


class RunError(RuntimeError):
    """A user-facing problem with a run directory or model file (reported in one line, exit code 2)."""


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
            # Tracked files only: a checkout with its own .venv/ or runs/ is not a modified one.
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
            )
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


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temp file and a rename, so an interrupted write never leaves a truncated file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    _write_atomically(path, json.dumps(_jsonable(data), indent=2) + "\n")


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as YAML in insertion order, atomically."""
    _write_atomically(path, yaml.safe_dump(_jsonable(data), sort_keys=False))


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
    write_yaml(run_dir / CONFIG_FILE, config)


def read_config(run_dir: Path) -> dict[str, Any]:
    """:return: the run's ``config.yml``; :raises RunError: when ``run_dir`` holds no run"""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    with open(path) as f:
        return yaml.safe_load(f)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """:return: the run's ``summary.json``, or None when there is none (or it cannot be read)"""
    path = run_dir / SUMMARY_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


def is_finished(run_dir: Path, target: int) -> bool:
    """:return: whether the run in ``run_dir`` finished with at least ``target`` timesteps"""
    summary = read_summary(run_dir)
    return bool(summary) and summary.get("status") == "finished" and summary.get("timesteps", 0) >= target


def find_run_dir(model_path: Path) -> Path | None:
    """:return: the run directory a model file lies in (``final_model.zip``, ``checkpoints/*.zip``), if any"""
    for parent in (model_path.parent, model_path.parent.parent):
        if (parent / CONFIG_FILE).exists():
            return parent
    return None


_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """:return: ``(timesteps, path)`` of every model checkpoint, oldest first"""
    found = []
    for path in (run_dir / CHECKPOINT_DIR).glob("*.zip"):
        match = _CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_model(run_dir: Path) -> tuple[int, Path]:
    """
    :param run_dir: a run directory
    :return: ``(timesteps, path)`` of the newest saved model (checkpoints; every session ends with one)
    :raises RunError: when there is none
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise RunError(f"{run_dir} has no checkpoint in {CHECKPOINT_DIR}/ to resume from")
    return ckpts[-1]


def checkpoint_vecnormalize(model_path: Path) -> Path | None:
    """:return: the VecNormalize statistics saved with a model file, if any"""
    match = _CKPT_RE.match(model_path.name)
    if match:
        candidate = model_path.parent / f"{CHECKPOINT_PREFIX}_vecnormalize_{match.group(1)}_steps.pkl"
    else:
        candidate = model_path.parent / FINAL_VECNORM
    return candidate if candidate.exists() else None


def _save_whole(save: Any, path: Path) -> None:
    """
    ``save(tmp)`` to a temporary name next to ``path``, then rename it to ``path``: the file appears whole
    or not at all, so a process killed mid-save (a lost node, SIGKILL) leaves the previous file usable.

    :param save: a function that writes the file at the path it is given (``model.save``, ``VecNormalize.save``)
    :param path: the final path
    """
    tmp = path.with_name(f"{path.stem}.partial{path.suffix}")  # keeps the suffix SB3 expects; no checkpoint name matches it
    save(str(tmp))
    os.replace(tmp, path)


def save_checkpoint(model: Any, run_dir: Path) -> Path:
    """Save model (+ VecNormalize) under the same names CheckpointCallback uses, so resume finds it; each file appears whole or not at all."""
    ckpt_dir = run_dir / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:  # first, so a model checkpoint never lacks its statistics
        _save_whole(vecnorm.save, ckpt_dir / f"{CHECKPOINT_PREFIX}_vecnormalize_{model.num_timesteps}_steps.pkl")
    path = ckpt_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps.zip"
    _save_whole(model.save, path)
    return path


def save_final_model(model: Any, run_dir: Path) -> None:
    """Save ``final_model.zip`` (+ ``vecnormalize.pkl``), each whole or not at all."""
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:
        _save_whole(vecnorm.save, run_dir / FINAL_VECNORM)
    _save_whole(model.save, run_dir / FINAL_MODEL)


def load_evaluations(run_dir: Path) -> dict[str, np.ndarray] | None:
    """:return: the contents of the run's ``evaluations.npz``, or None before the first evaluation"""
    path = run_dir / EVAL_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


# Monitor files -------------------------------------------------------------------------------
# SB3's Monitor truncates its file when created, and VecMonitor (the T-Maze's, MIKASA-Robo's
# batched backend's) has no ``override_existing`` at all. So that every kind of monitor file is
# *appended* to by a resumed run, the old files are set aside before the envs are built and merged
# back (rows of the new session after the old ones, times shifted to the old file's t_start) once
# the envs are closed. A leftover ``.prev`` (a session killed without cleanup) is merged first.


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
