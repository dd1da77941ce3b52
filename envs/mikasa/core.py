"""The batched core shared by both backends: one ManiSkill env, its observations, rewards and bookkeeping."""

from __future__ import annotations

from typing import Any, Optional, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.mikasa.hiding import _install_gpu_consistent_hiding
from envs.mikasa.observations import MemoryStateObserver
from envs.mikasa.runtime import _check_assets, _import_mikasa
from envs.wrappers import PREV_KEY
from envs.mikasa.tasks import MIKASA_TASKS, OBS_MODES, REWARD_MODES, TASK_FAMILY, _check_choice


class MikasaCore:
    """One ManiSkill env of ``num_envs`` sub-envs, with observations, rewards and episode bookkeeping as
    batched torch tensors on the simulation device (no per-env Python loops).

    :param task: task name without ``-v0`` (one of ``MIKASA_TASKS``)
    :param num_envs: number of parallel sub-envs (1 on ``physx_cpu``)
    :param obs_mode: ``"memory-state"``, ``"state"`` or ``"rgb"``
    :param reward_mode: ``"dense"``, ``"normalized_dense"`` or ``"sparse"`` (cast to float)
    :param prev_action: add the previous action (zeros at an episode start), with the same layout as the
        common wrapper :class:`envs.wrappers.PrevActionReward`: appended to the flat vector in the state
        modes, a separate ``"prev_action_reward"`` entry in ``rgb`` mode. The batched backend uses this;
        the CPU backend uses the common wrapper itself (a test holds the two to the same observations).
    :param prev_reward: with ``prev_action``, also add the previous reward. Off by default: with a dense
        reward the previous reward gives the distance to the hidden goal (in RememberColor, the true
        cube), which answers the memory question from one observation (docs/mikasa.md)
    :param sim_backend: ManiSkill ``sim_backend`` (``"physx_cpu"`` or ``"physx_cuda"``)
    :param render_backend: ManiSkill ``render_backend`` (``"cpu"`` for lavapipe, ``"gpu"``, ``"none"``);
        default: ``"none"`` (no renderer, no Vulkan needed) in the state modes, where nothing is rendered,
        ``"cpu"``/``"gpu"`` (by ``sim_backend``) in ``rgb`` mode
    :param control_mode: ManiSkill controller; MIKASA's default is ``"pd_joint_delta_pos"``
    :param max_episode_steps: episode length; defaults to the task's registered one (60 to 180)
    :param ignore_terminations: run every episode to ``max_episode_steps`` instead of ending at success
    :param gpu_consistent_hiding: on the CPU backend, make the tasks' pose-based hiding visual-only, as on
        the GPU (see :func:`_install_gpu_consistent_hiding`); without it, cue objects are physically
        launched away on the CPU and most tasks cannot be solved
    :param make_kwargs: further keyword arguments for ``gym.make`` (e.g. ``sensor_configs``)
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        obs_mode: str = "memory-state",
        reward_mode: str = "normalized_dense",
        prev_action: bool = False,
        prev_reward: bool = False,
        sim_backend: str = "physx_cpu",
        render_backend: Optional[str] = None,
        control_mode: str = "pd_joint_delta_pos",
        max_episode_steps: Optional[int] = None,
        ignore_terminations: bool = False,
        gpu_consistent_hiding: bool = True,
        **make_kwargs: Any,
    ) -> None:
        _check_choice("task", task, tuple(MIKASA_TASKS))
        _check_choice("obs_mode", obs_mode, OBS_MODES)
        _check_choice("reward_mode", reward_mode, REWARD_MODES)
        _import_mikasa()
        from mani_skill.utils.registration import REGISTERED_ENVS

        env_id = f"{task}-v0"
        _check_assets(env_id)
        self.task, self.family, self.env_id = task, TASK_FAMILY[task], env_id
        self.num_envs, self.obs_mode = num_envs, obs_mode
        self.prev_action, self.prev_reward = prev_action, prev_action and prev_reward
        self.ignore_terminations = ignore_terminations
        self.max_episode_steps = int(max_episode_steps or REGISTERED_ENVS[env_id].max_episode_steps)
        # memory-state is built from the live simulation: ManiSkill's own observation ("none") is not
        # computed at all (the task's evaluate() still runs every step, for the reward and success).
        raw_mode = {"memory-state": "none", "state": "state", "rgb": "rgb"}[obs_mode]
        if render_backend is None:
            # Nothing is rendered in the state modes: no renderer (saves memory and start-up, needs no Vulkan).
            render_backend = "none" if obs_mode != "rgb" else ("cpu" if sim_backend == "physx_cpu" else "gpu")
        # We handle the time limit ourselves (batched), so use the bare env below ManiSkill's wrappers.
        self.env = gym.make(
            env_id,
            num_envs=num_envs,
            obs_mode=raw_mode,
            reward_mode=reward_mode,
            control_mode=control_mode,
            sim_backend=sim_backend,
            render_backend=render_backend,
            **make_kwargs,
        ).unwrapped
        self.device = self.env.device
        if gpu_consistent_hiding and not self.env.gpu_sim_enabled:
            _install_gpu_consistent_hiding(self.env)
        act_space = self.env.single_action_space
        assert isinstance(act_space, spaces.Box), act_space
        self.action_space = spaces.Box(act_space.low, act_space.high, act_space.shape, np.float32)
        self.act_dim = int(np.prod(act_space.shape))
        self._memory = MemoryStateObserver(self.env, self.family) if obs_mode == "memory-state" else None

        b, dev = num_envs, self.device
        self.prev_actions = torch.zeros((b, self.act_dim), dtype=torch.float32, device=dev)
        self.prev_rewards = torch.zeros((b, 1), dtype=torch.float32, device=dev)
        self.success_once = torch.zeros(b, dtype=torch.bool, device=dev)
        raw_obs, _ = self.env.reset(seed=0)
        self.observation_space = self._make_space(self._observe(raw_obs))

    # -------------------------------------------------------------------------------- observations
    def _vector_extra(self) -> list[torch.Tensor]:
        if not self.prev_action:
            return []
        return [self.prev_actions, self.prev_rewards] if self.prev_reward else [self.prev_actions]

    def _observe(self, raw_obs: Any) -> Union[torch.Tensor, dict[str, torch.Tensor]]:
        """Batched observation (torch, on the sim device) from ManiSkill's raw observation."""
        if self.obs_mode == "state":
            return torch.cat([raw_obs.to(torch.float32)] + self._vector_extra(), dim=1)
        if self.obs_mode == "memory-state":
            return torch.cat([self._memory()] + self._vector_extra(), dim=1)
        # rgb: cameras stacked along channels (C = 3 * cameras), channel-first uint8 as SB3's CNNs expect,
        # plus proprioception (+ the task instruction where MIKASA gives one, Rotate's target angle).
        images = [cam["rgb"] for cam in raw_obs["sensor_data"].values()]
        rgb = torch.cat(images, dim=-1).permute(0, 3, 1, 2)
        env = self.env
        vec = [raw_obs["agent"]["qpos"], raw_obs["agent"]["qvel"], env.agent.tcp.pose.raw_pose]
        if self.family == "Rotate":
            vec.append(env.target_angle.to(torch.float32).reshape(-1, 1))
        vec = [v.to(torch.float32).reshape(v.shape[0], -1) for v in vec]
        obs = {"rgb": rgb.contiguous(), "state": torch.cat(vec, dim=1)}
        if self.prev_action:  # the common wrapper's layout for a Dict observation: a key of its own
            obs[PREV_KEY] = torch.cat(self._vector_extra(), dim=1)
        return obs

    @staticmethod
    def _make_space(obs: Union[torch.Tensor, dict[str, torch.Tensor]]) -> spaces.Space:
        def box(x: torch.Tensor) -> spaces.Box:
            return spaces.Box(-np.inf, np.inf, tuple(x.shape[1:]), np.float32)

        if isinstance(obs, dict):
            return spaces.Dict(
                {k: spaces.Box(0, 255, tuple(v.shape[1:]), np.uint8) if k == "rgb" else box(v) for k, v in obs.items()}
            )
        return box(obs)

    # -------------------------------------------------------------------------------- reset / step
    def reset(
        self, seed: Optional[Union[int, list[int]]] = None, env_idx: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, dict[str, torch.Tensor]]:
        """Reset all sub-envs (``env_idx=None``) or only ``env_idx``; returns the observation of all.

        :param seed: seed (or one seed per sub-env) for ManiSkill's episode RNG
        :param env_idx: indices of the sub-envs to reset (a partial reset on the GPU backend)
        """
        options = {} if env_idx is None else {"env_idx": env_idx}
        idx = slice(None) if env_idx is None else env_idx
        self.prev_actions[idx] = 0.0
        self.prev_rewards[idx] = 0.0
        self.success_once[idx] = False
        raw_obs, _ = self.env.reset(seed=seed, options=options)
        return self._observe(raw_obs)

    def step(self, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step every sub-env once.

        :param actions: (num_envs, act_dim) float tensor on the sim device
        :return: observation, reward (float), terminated, truncated, success (bools), all batched; the
            observation is the pre-reset one of sub-envs whose episode just ended
        """
        raw_obs, reward, terminated, _, info = self.env.step(actions)
        reward = reward.to(torch.float32).reshape(-1)  # "sparse" gives bools
        success = info["success"].reshape(-1).bool() if "success" in info else torch.zeros_like(terminated)
        self.success_once |= success
        if self.ignore_terminations:
            terminated = torch.zeros_like(terminated)
        truncated = self.env.elapsed_steps.reshape(-1) >= self.max_episode_steps
        self.prev_actions[:] = actions.to(torch.float32)
        self.prev_rewards[:, 0] = reward
        return self._observe(raw_obs), reward, terminated.reshape(-1), truncated & ~terminated.reshape(-1), success

    def close(self) -> None:
        self.env.close()


def _to_numpy(obs: Union[torch.Tensor, dict[str, torch.Tensor]]) -> Union[np.ndarray, dict[str, np.ndarray]]:
    if isinstance(obs, dict):
        return {k: v.cpu().numpy() for k, v in obs.items()}
    return obs.cpu().numpy()
