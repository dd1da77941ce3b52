"""Benchmark environments for elmur-sb3: name resolution, wrappers, vectorized envs.

>>> from envs import make_vec_env
>>> venv = make_vec_env("popgym-RepeatPrevious", n_envs=4, seed=0)   # RepeatPreviousEasy
>>> venv = make_vec_env("tmaze-1000", n_envs=8)                       # natively vectorized T-Maze

See :mod:`envs.registry` for the names, :mod:`envs.wrappers` for the observation
layout, :mod:`envs.tmaze` for the T-Maze and :mod:`envs.classic` for ``CartPoleNoVel-v1``,
``PendulumNoVel-v1`` and ``RecallBack-v0``.
"""

from envs.classic import MaskVelocity, RecallBackEnv, register as _register_classic
from envs.registry import UnknownEnvError, env_family, list_env_names, make_vec_env, resolve_env_name
from envs.tmaze import TMazeEnv, TMazeVecEnv
from envs.wrappers import FlattenOneHotObservation, PrevActionReward, wrap_env

__all__ = [
    "UnknownEnvError",
    "resolve_env_name",
    "env_family",
    "list_env_names",
    "make_vec_env",
    "TMazeEnv",
    "TMazeVecEnv",
    "FlattenOneHotObservation",
    "PrevActionReward",
    "wrap_env",
    "MaskVelocity",
    "RecallBackEnv",
]

_register_classic()
