"""The runner interface that the sweep modules (Ray backend, tuning, suites) use, imported in this one place so the runner's layout can change under them.

Everything the sweep code needs from the runner, the run directory, the report and the env tables
comes through here; nothing else in ``agents/sweep_ray.py``, ``agents/tune.py`` or
``agents/suites.py`` imports those modules directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from agents import session
from agents.experiment import Experiment, resolve_experiment
from agents.hyperparams import HYPERPARAMS_DIR, PROTOCOL_KEYS, HyperparamError, parse_overrides
from agents.registry import get_algo
from agents.report import CellRun, write_report
from agents.rundir import CONFIG_FILE, SUMMARY_FILE, RunError, is_finished, list_checkpoints, load_evaluations, read_summary
from agents.scores import metric_for
from agents.session import RunOptions


def run_cell_reporting(
    exp: Experiment,
    run_dir: Path,
    options: RunOptions,
    command: list[str],
    after_eval: BaseCallback | None = None,
) -> dict[str, Any]:
    """
    Train, resume or return one grid cell (:func:`agents.session.run_cell` with
    ``continue_existing=True``), calling ``after_eval`` after every evaluation.

    :param exp: the resolved experiment
    :param run_dir: the cell's run directory
    :param options: device, progress bar, verbosity
    :param command: the ``train.py`` command line that repeats the cell, recorded in config.yml
    :param after_eval: an SB3 callback run by the EvalCallback after each evaluation (its ``parent``
        is the EvalCallback), or None
    :return: the run's summary and ``exit_code``
    """
    original = session._make_callbacks

    def with_after_eval(*args: Any, **kwargs: Any) -> Any:
        eval_cb, pbar_cb, callback_list = original(*args, **kwargs)
        if after_eval is not None:
            # What EvalCallback(callback_after_eval=...) does in its constructor.
            eval_cb.callback = after_eval
            after_eval.parent = eval_cb
        return eval_cb, pbar_cb, callback_list

    session._make_callbacks = with_after_eval
    try:
        return session.run_cell(exp, run_dir, options, command, continue_existing=True)
    finally:
        session._make_callbacks = original


def mikasa_families() -> dict[str, list[str]]:
    """:return: the MIKASA-Robo task families ``{family: [task, ...]}`` (no ManiSkill import)"""
    from envs.mikasa.tasks import MIKASA_FAMILIES

    return MIKASA_FAMILIES


__all__ = [
    "CONFIG_FILE",
    "HYPERPARAMS_DIR",
    "PROTOCOL_KEYS",
    "SUMMARY_FILE",
    "CellRun",
    "Experiment",
    "HyperparamError",
    "RunError",
    "RunOptions",
    "get_algo",
    "is_finished",
    "list_checkpoints",
    "load_evaluations",
    "metric_for",
    "mikasa_families",
    "parse_overrides",
    "read_summary",
    "resolve_experiment",
    "run_cell_reporting",
    "write_report",
]
