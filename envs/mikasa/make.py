"""The entry point: ``make_mikasa_vec_env`` checks the options and builds the VecEnv of either backend."""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from envs.mikasa.batched import MikasaBatchedVecEnv
from envs.mikasa.cpu import _make_cpu_env
from envs.mikasa.runtime import _import_mikasa
from envs.mikasa.tasks import (
    BACKENDS,
    ENV_KWARGS_KEYS,
    INFO_KEYWORDS,
    MIKASA_TASKS,
    OBS_MODES,
    REWARD_MODES,
    VEC_ENV_CLASSES,
    _check_choice,
)


def _normalize_vec_env_cls(vec_env_cls: Optional[str]) -> str:
    name = (vec_env_cls or "dummy").lower()
    aliases = {"dummy": "dummy", "dummyvecenv": "dummy", "subproc": "subproc", "subprocvecenv": "subproc"}
    if name not in aliases:
        raise ValueError(f"mikasa: vec_env_cls={vec_env_cls!r} is not valid; choose one of {list(VEC_ENV_CLASSES)}")
    return aliases[name]


def make_mikasa_vec_env(
    task: str,
    n_envs: int,
    seed: int,
    prev_action: bool,
    env_kwargs: dict,
    monitor_dir: Optional[str],
    vec_env_cls: str,
) -> VecEnv:
    """Create a monitored SB3 VecEnv of a MIKASA-Robo task.

    :param task: task name without ``-v0``, one of ``MIKASA_TASKS`` (e.g. ``"RememberColor3"``)
    :param n_envs: number of parallel environments
    :param seed: base seed (env ``i`` gets ``seed + i``)
    :param prev_action: add the previous action (zeros at episode start) as the common wrapper
        :class:`envs.wrappers.PrevActionReward` does: appended to the flat observation in the
        ``state``/``memory-state`` modes, a ``"prev_action_reward"`` entry in ``rgb`` mode; the previous
        reward only with ``env_kwargs["prev_reward"]=True`` (off by default: a dense reward tells the
        distance to the hidden goal, which answers the memory question, see docs/mikasa.md)
    :param env_kwargs: ``obs_mode`` (``"memory-state"`` default, ``"state"``, ``"rgb"``), ``reward_mode``
        (``"normalized_dense"`` default, ``"dense"``, ``"sparse"``), ``backend`` (``"cpu"`` default,
        ``"gpu"``), ``prev_reward`` (``False`` default), and pass-through: ``control_mode``, ``max_episode_steps``, ``ignore_terminations``,
        ``gpu_consistent_hiding``, ``sim_backend``, ``render_backend``, ``sensor_configs``,
        ``robot_init_qpos_noise``
    :param monitor_dir: where Monitor/VecMonitor write their CSV files (None: not written)
    :param vec_env_cls: ``"dummy"`` or ``"subproc"`` for the CPU backend; with ``n_envs > 1`` it is always
        ``"subproc"`` (ManiSkill's CPU simulation allows one env per process, and the processes step in
        parallel); ignored by the GPU backend, which is one batched VecEnv
    :return: the VecEnv
    """
    env_kwargs = dict(env_kwargs or {})
    unknown = sorted(set(env_kwargs) - set(ENV_KWARGS_KEYS))
    if unknown:
        raise ValueError(f"mikasa: unknown env_kwargs {unknown}; valid keys are {list(ENV_KWARGS_KEYS)}")
    _check_choice("task", task, tuple(MIKASA_TASKS))
    obs_mode = env_kwargs.pop("obs_mode", "memory-state")
    reward_mode = env_kwargs.pop("reward_mode", "normalized_dense")
    backend = env_kwargs.pop("backend", "cpu")
    _check_choice("obs_mode", obs_mode, OBS_MODES)
    _check_choice("reward_mode", reward_mode, REWARD_MODES)
    _check_choice("backend", backend, BACKENDS)
    if n_envs < 1:
        raise ValueError(f"mikasa: n_envs must be >= 1, got {n_envs}")
    core_kwargs = dict(obs_mode=obs_mode, reward_mode=reward_mode, prev_action=prev_action, **env_kwargs)
    core_kwargs["prev_reward"] = bool(core_kwargs.get("prev_reward", False))

    if backend == "gpu":
        core_kwargs.setdefault("sim_backend", "physx_cuda")
        core_kwargs.setdefault("render_backend", "gpu")
        venv = MikasaBatchedVecEnv(task, n_envs, seed=seed, **core_kwargs)
        venv.seed(seed)
        filename = None
        if monitor_dir is not None:
            os.makedirs(monitor_dir, exist_ok=True)
            filename = os.path.join(monitor_dir, "batched")
        return VecMonitor(venv, filename=filename, info_keywords=INFO_KEYWORDS)

    core_kwargs.setdefault("sim_backend", "physx_cpu")  # render_backend: MikasaCore's default (none unless rgb)
    kind = _normalize_vec_env_cls(vec_env_cls)
    if n_envs > 1:
        kind = "subproc"  # one ManiSkill CPU env per process
    # Resolve the Vulkan driver now, so that subprocesses inherit it.
    _import_mikasa()
    env_fns: list[Callable[[], gym.Env]] = [
        functools.partial(_make_cpu_env, rank, task, seed, monitor_dir, core_kwargs) for rank in range(n_envs)
    ]
    venv = DummyVecEnv(env_fns) if kind == "dummy" else SubprocVecEnv(env_fns)
    venv.seed(seed)
    return venv
