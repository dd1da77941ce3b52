"""CPU backend: one ManiSkill env per process, as a gymnasium env for SB3's DummyVecEnv/SubprocVecEnv."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor

from envs.mikasa.core import MikasaCore, _to_numpy
from envs.mikasa.tasks import INFO_KEYWORDS
from envs.wrappers import PrevActionReward


class MikasaGymEnv(gym.Env):
    """A single MIKASA-Robo env (ManiSkill ``physx_cpu``, ``num_envs=1``) with numpy observations.

    Episodes end at success (unless ``ignore_terminations``) or at ``max_episode_steps`` (truncation). The
    last step's info has ``is_success`` (= ``success_once``), ``success_once`` and ``success_at_end``.

    :param task: task name without ``-v0``
    :param core_kwargs: keyword arguments of :class:`MikasaCore` (``num_envs`` is fixed to 1; the CPU
        backend leaves ``prev_action`` to the common wrapper, see :func:`_make_cpu_env`)
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str, **core_kwargs: Any) -> None:
        super().__init__()
        self.core = MikasaCore(task, num_envs=1, **core_kwargs)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        obs = self.core.reset(seed=seed)
        return self._single(obs), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        act = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, -1), device=self.core.device)
        obs, reward, terminated, truncated, success = self.core.step(act)
        term, trunc = bool(terminated[0]), bool(truncated[0])
        info: dict[str, Any] = {"success": bool(success[0])}
        if term or trunc:
            once = bool(self.core.success_once[0])
            info.update(is_success=once, success_once=once, success_at_end=bool(success[0]))
        return self._single(obs), float(reward[0]), term, trunc, info

    @staticmethod
    def _single(obs: Any) -> Any:
        obs = _to_numpy(obs)
        if isinstance(obs, dict):
            return {k: v[0] for k, v in obs.items()}
        return obs[0]

    def close(self) -> None:
        self.core.close()


def _make_cpu_env(rank: int, task: str, seed: int, monitor_dir: Optional[str], core_kwargs: dict) -> gym.Env:
    """Build one monitored CPU env (module-level so that SubprocVecEnv can pickle it).

    The previous action (and reward, with ``prev_reward``) comes from the common wrapper
    :class:`envs.wrappers.PrevActionReward`, as for every other benchmark env.
    """
    if multiprocessing.parent_process() is not None:
        # In a SubprocVecEnv worker: ManiSkill's per-step torch work is on tiny tensors, and several
        # workers share few cores, so torch's intra-op thread pool would only contend.
        torch.set_num_threads(1)
    core_kwargs = dict(core_kwargs)
    prev_action = core_kwargs.pop("prev_action", False)
    prev_reward = core_kwargs.pop("prev_reward", False)
    env: gym.Env = MikasaGymEnv(task, **core_kwargs)
    env.action_space.seed(seed + rank)
    if prev_action:
        env = PrevActionReward(env, use_reward=prev_reward)
    filename = None
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
        filename = os.path.join(monitor_dir, str(rank))
    return Monitor(env, filename=filename, info_keywords=INFO_KEYWORDS)
