"""Algorithm registry and hyperparameter presets for the benchmark (rl-zoo3 style).

- :mod:`agents.registry`: ``ppo-elmur``, ``ppo-lstm``, ``ppo`` and how each is built;
- :mod:`agents.hyperparams`: the YAML presets in ``agents/hyperparams/`` and ``--hp`` overrides;
- :mod:`agents.runner`: one run (train, resume, evaluate) and its run directory;
- :mod:`agents.compare`: the multi-seed comparison grid;
- :mod:`agents.cli`: the ``train.py`` command line.
"""

from agents.hyperparams import HyperparamError, load_hyperparams
from agents.registry import ALGOS, AlgoSpec, UnknownAlgoError, get_algo

__all__ = ["ALGOS", "AlgoSpec", "HyperparamError", "UnknownAlgoError", "get_algo", "load_hyperparams"]
