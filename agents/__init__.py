"""The benchmark layer behind ``train.py``: algorithm registry, hyperparameter presets, runs, comparisons.

Imports go one way, top to bottom (a module imports only modules listed above it):

- :mod:`agents.registry`: ``ppo-elmur``, ``ppo-lstm``, ``ppo``, how each is built, which one saved a zip;
- :mod:`agents.hyperparams`: the YAML presets in ``agents/hyperparams/`` and ``--hp`` overrides;
- :mod:`agents.scores`: the headline metric of each env family and the score of a run;
- :mod:`agents.experiment`: what defines one run, resolved from names, preset and overrides;
- :mod:`agents.rundir`: the run directory's files (config, summary, checkpoints, evaluations, monitors);
- :mod:`agents.signals`: Ctrl-C/SIGTERM during training;
- :mod:`agents.build`: a run's envs and model;
- :mod:`agents.session`: training sessions (new, resumed) and ``run_cell``, one cell in this process;
- :mod:`agents.evaluate`: ``--eval-only``;
- :mod:`agents.report`: a comparison's table and plot;
- :mod:`agents.compare`: the (algorithm x seed) grid in worker processes;
- :mod:`agents.cli`: the ``train.py`` command line.
"""

from agents.hyperparams import HyperparamError, load_hyperparams
from agents.registry import ALGOS, AlgoSpec, UnknownAlgoError, get_algo

__all__ = ["ALGOS", "AlgoSpec", "HyperparamError", "UnknownAlgoError", "get_algo", "load_hyperparams"]
