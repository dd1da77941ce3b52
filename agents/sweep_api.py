"""The runner interface that the sweep modules (Ray backend, tuning, suites) use, imported in this one place so the runner's layout can change under them.

Everything the sweep code (``sweep_ray``, ``tune``, ``presets``, ``suites``, ``aggregate``) needs
from the experiment, run-directory and session modules and the env tables comes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.experiment import Experiment, resolve_experiment
from agents.hyperparams import HYPERPARAMS_DIR, PROTOCOL_KEYS, HyperparamError, parse_overrides
from agents.registry import get_algo
from agents.rundir import is_finished, list_checkpoints, read_summary
from agents.session import RunOptions, run_cell


def run_cell_reporting(
    exp: Experiment,
    run_dir: Path,
    options: RunOptions,
    command: list[str],
) -> dict[str, Any]:
    """
    Train, resume or return one grid cell (:func:`agents.session.run_cell` with
    ``continue_existing=True``); ``options.after_eval`` runs after every evaluation.

    :param exp: the resolved experiment
    :param run_dir: the cell's run directory
    :param options: device, progress bar, verbosity, the after-evaluation callback
    :param command: the ``train.py`` command line that repeats the cell, recorded in config.yml
    :return: the run's summary and ``exit_code``
    """
    return run_cell(exp, run_dir, options, command, continue_existing=True)


def mikasa_families() -> dict[str, list[str]]:
    """:return: the MIKASA-Robo task families ``{family: [task, ...]}`` (no ManiSkill import)"""
    from envs.mikasa.tasks import MIKASA_FAMILIES

    return MIKASA_FAMILIES


__all__ = [
    "HYPERPARAMS_DIR",
    "PROTOCOL_KEYS",
    "Experiment",
    "HyperparamError",
    "RunOptions",
    "get_algo",
    "is_finished",
    "list_checkpoints",
    "mikasa_families",
    "parse_overrides",
    "read_summary",
    "resolve_experiment",
    "run_cell_reporting",
]
