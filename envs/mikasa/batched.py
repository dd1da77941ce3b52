"""GPU backend: one batched ManiSkill env of many sub-envs as a single SB3 VecEnv."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.mikasa.core import MikasaCore, _to_numpy


class MikasaBatchedVecEnv(VecEnv):
    """A batched ManiSkill MIKASA env as an SB3 ``VecEnv``: one simulator call steps all ``num_envs``.

    Sub-envs whose episode ended are reset together by one partial reset; their pre-reset observation is
    returned in ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` tells a time
    limit from a true termination, as SB3's own VecEnvs do. Bookkeeping is batched on the sim device; one
    host copy per array per step is the only transfer (SB3 algorithms need numpy). Wrap it in
    ``VecMonitor`` for episode statistics (``make_mikasa_vec_env`` does).

    :param task: task name without ``-v0``
    :param num_envs: number of parallel sub-envs
    :param seed: base seed; sub-env ``i`` is seeded ``seed + i`` at the first reset
    :param core_kwargs: keyword arguments of :class:`MikasaCore`
    """

    def __init__(self, task: str, num_envs: int, seed: int = 0, **core_kwargs: Any) -> None:
        self.core = MikasaCore(task, num_envs=num_envs, **core_kwargs)
        super().__init__(num_envs, self.core.observation_space, self.core.action_space)
        self._seeds: list[Optional[int]] = [seed + i for i in range(num_envs)]
        self._actions: Optional[torch.Tensor] = None
        self._low = torch.as_tensor(self.action_space.low, device=self.core.device)
        self._high = torch.as_tensor(self.action_space.high, device=self.core.device)

    def reset(self) -> VecEnvObs:
        seeds = self._seeds if all(s is not None for s in self._seeds) else None
        obs = self.core.reset(seed=seeds)
        self._seeds = [None] * self.num_envs
        self._reset_infos = [{} for _ in range(self.num_envs)]
        return _to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.core.device).reshape(
            self.num_envs, -1
        )

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must be called before step_wait"
        actions = torch.clamp(self._actions, self._low, self._high)
        obs, reward, terminated, truncated, success = self.core.step(actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if bool(done.any()):
            idx = torch.nonzero(done).reshape(-1)
            # Gather what the finished sub-envs need (one device->host copy each), then reset them all
            # with one partial reset.
            final_obs = _to_numpy(
                {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]
            )
            once = self.core.success_once[idx].cpu().numpy()
            at_end = success[idx].cpu().numpy()
            time_limit = (truncated[idx] & ~terminated[idx]).cpu().numpy()
            for j, i in enumerate(idx.cpu().tolist()):
                term_obs = {k: v[j] for k, v in final_obs.items()} if isinstance(final_obs, dict) else final_obs[j]
                infos[i] = {
                    "terminal_observation": term_obs,
                    "TimeLimit.truncated": bool(time_limit[j]),
                    "is_success": bool(once[j]),
                    "success_once": bool(once[j]),
                    "success_at_end": bool(at_end[j]),
                }
            obs = self.core.reset(env_idx=idx)
        self._actions = None
        return _to_numpy(obs), reward.cpu().numpy(), done.cpu().numpy(), infos

    def close(self) -> None:
        self.core.close()

    def seed(self, seed: Optional[int] = None) -> list[Union[None, int]]:
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._seeds = [seed + i for i in range(self.num_envs)]
        return list(self._seeds)

    # The sub-envs are not separate Python objects: attribute access goes to the batched env.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.core.env, attr_name) if not hasattr(self, attr_name) else getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.core.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list:
        result = getattr(self.core.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> list[np.ndarray]:
        return []
