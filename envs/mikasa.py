"""MIKASA-Robo (memory-intensive manipulation on ManiSkill3) as Stable-Baselines3 vectorized envs.

Entry point: :func:`make_mikasa_vec_env`, called by the env registry for ``mikasa-<Task>`` names.

Two backends share one observation/bookkeeping core (:class:`MikasaCore`, batched torch code):

- ``backend="cpu"``: one ManiSkill env (``physx_cpu``, ``num_envs=1``) per process, as a gymnasium env
  (:class:`MikasaGymEnv`) inside SB3's ``DummyVecEnv`` / ``SubprocVecEnv``.
- ``backend="gpu"``: one batched ManiSkill env (``physx_cuda``, ``num_envs=n_envs``) wrapped once as an
  SB3 ``VecEnv`` (:class:`MikasaBatchedVecEnv`) that steps the whole batch in one call.

Observation modes (``env_kwargs["obs_mode"]``): ``"memory-state"`` (default), ``"state"``, ``"rgb"``.
See docs/mikasa.md for what each mode shows per task family, and why.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

# The 32 MIKASA-Robo tasks (ids are "<task>-v0"), grouped by family.
MIKASA_FAMILIES: dict[str, list[str]] = {
    "ShellGame": ["ShellGameTouch", "ShellGamePush", "ShellGamePick"],
    "Intercept": ["InterceptSlow", "InterceptMedium", "InterceptFast"],
    "InterceptGrab": ["InterceptGrabSlow", "InterceptGrabMedium", "InterceptGrabFast"],
    "Rotate": ["RotateLenientPos", "RotateLenientPosNeg", "RotateStrictPos", "RotateStrictPosNeg"],
    "TakeItBack": ["TakeItBack"],
    "RememberColor": ["RememberColor3", "RememberColor5", "RememberColor9"],
    "RememberShape": ["RememberShape3", "RememberShape5", "RememberShape9"],
    "RememberShapeAndColor": ["RememberShapeAndColor3x2", "RememberShapeAndColor3x3", "RememberShapeAndColor5x3"],
    "SeqOfColors": ["SeqOfColors3", "SeqOfColors5", "SeqOfColors7"],
    "BunchOfColors": ["BunchOfColors3", "BunchOfColors5", "BunchOfColors7"],
    "ChainOfColors": ["ChainOfColors3", "ChainOfColors5", "ChainOfColors7"],
}
MIKASA_TASKS: list[str] = [task for tasks in MIKASA_FAMILIES.values() for task in tasks]
TASK_FAMILY: dict[str, str] = {task: fam for fam, tasks in MIKASA_FAMILIES.items() for task in tasks}

OBS_MODES = ("memory-state", "state", "rgb")
REWARD_MODES = ("dense", "normalized_dense", "sparse")
BACKENDS = ("cpu", "gpu")
VEC_ENV_CLASSES = ("dummy", "subproc")
# Keys of env_kwargs besides obs_mode/reward_mode/backend (documented in make_mikasa_vec_env).
PASS_THROUGH_KEYS = (
    "control_mode",
    "max_episode_steps",
    "ignore_terminations",
    "gpu_consistent_hiding",
    "sim_backend",
    "render_backend",
    "sensor_configs",
    "robot_init_qpos_noise",
)
ENV_KWARGS_KEYS = ("obs_mode", "reward_mode", "backend") + PASS_THROUGH_KEYS
INFO_KEYWORDS = ("is_success", "success_once", "success_at_end")

# MIKASA hides objects by placing them 1000 m up (z += 1000); anything this high is "not shown".
_HIDDEN_Z = 100.0
# Horizontal radius within which a mug covers the ball in ShellGame (mug 025_mug is ~6 cm wide at the rim).
_MUG_COVER_RADIUS = 0.05
_REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# Setup: Vulkan, imports, assets
# ----------------------------------------------------------------------------------------------------------
def _ensure_vulkan() -> None:
    """Point the Vulkan loader at the project's lavapipe (``.vulkan/``, from scripts/install_mikasa.sh).

    SAPIEN always creates a renderer, even for state observations, so CPU-only machines need a software
    Vulkan. Only done when ``VK_ICD_FILENAMES`` is unset, so a user's own choice (or a GPU driver) wins.
    """
    icd = _REPO_ROOT / ".vulkan" / "lvp_icd.json"
    if "VK_ICD_FILENAMES" not in os.environ and "VK_DRIVER_FILES" not in os.environ and icd.exists():
        os.environ["VK_ICD_FILENAMES"] = str(icd)


def _import_mikasa() -> None:
    """Import ManiSkill and register the MIKASA-Robo ids, with a one-line hint when they are missing."""
    _ensure_vulkan()
    try:
        import mani_skill  # noqa: F401
        import mikasa_robo_suite.rl.memory_envs  # noqa: F401  (registers the 32 "*-v0" ids)
    except ImportError as e:
        raise ImportError(
            f"MIKASA-Robo needs mani-skill and mikasa-robo-suite ({e}); install them with "
            "`bash scripts/install_mikasa.sh` (see docs/mikasa.md)"
        ) from e


def _check_assets(env_id: str) -> None:
    """Fail fast, with a clear message, when a task needs assets that are not on disk.

    ManiSkill would otherwise try to download them inside ``gym.make`` (asking on stdin first): with no
    network and no terminal that is a hang or an obscure error.
    """
    from mani_skill import ASSET_DIR
    from mani_skill.utils import assets
    from mani_skill.utils.registration import REGISTERED_ENVS

    spec = REGISTERED_ENVS[env_id]
    missing = []
    for asset_id in getattr(spec, "asset_download_ids", None) or []:
        if asset_id in assets.DATA_GROUPS:
            sources = assets.expand_data_group_into_individual_data_source_ids(asset_id)
        elif asset_id in assets.DATA_SOURCES:
            sources = [asset_id]
        else:  # an id this ManiSkill version does not know: let gym.make report it
            continue
        missing += [s for s in sources if not assets.is_data_source_downloaded(s)]
    if missing:
        raise FileNotFoundError(
            f"{env_id} needs the ManiSkill asset(s) {sorted(set(missing))}, not found under {ASSET_DIR}: "
            f"run `python -m mani_skill.utils.download_asset ycb` on a machine with network access and copy the "
            f"folder here, or set MS_ASSET_DIR to a directory that holds it (e.g. <dir>/data/assets/mani_skill2_ycb)"
        )


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"mikasa: {name}={value!r} is not valid; choose one of {list(valid)}")


# ----------------------------------------------------------------------------------------------------------
# CPU simulation: make pose edits inside evaluate() visual-only, as they are on the GPU
# ----------------------------------------------------------------------------------------------------------
def _install_gpu_consistent_hiding(env: Any) -> None:
    """Make MIKASA's object hiding behave on ``physx_cpu`` as it does on ``physx_cuda``.

    MIKASA hides cues by writing poses (z + 1000) to actors inside ``evaluate()``, every step. On the GPU
    backend ManiSkill only writes these poses into the batched state buffer: cameras and state
    observations see them, but they are never applied to the physics, and the next sim step's fetch
    restores the true poses. On the CPU backend the same writes teleport the bodies, so e.g. in
    RememberColor the cubes are launched to z=1000 during the cue and fall forever afterwards, and the task
    cannot be solved. Here we snapshot the PhysX state before ``evaluate()`` and restore it just before
    the next action is applied (and before a reset), which reproduces the GPU semantics: observations
    and renders of this step see the hidden poses, the physics never does.

    :param env: the unwrapped ManiSkill ``BaseEnv`` (CPU simulation)
    """
    physx = env.scene.px  # the CPU PhysX system; pack()/unpack() save and restore its state bit-exactly
    original_evaluate = env.evaluate
    original_step_action = env._step_action
    original_initialize_episode = env._initialize_episode
    state: dict[str, Any] = {"saved": None}

    def restore() -> None:
        if state["saved"] is not None:
            physx.unpack(state["saved"])
            state["saved"] = None

    def evaluate() -> dict:
        # If evaluate() runs twice without a step in between, start again from the true state.
        restore()
        state["saved"] = physx.pack()
        return original_evaluate()

    def step_action(action: Any) -> Any:
        # Before the new action is set and simulated: physics continues from the true state. (Restoring
        # pose by pose instead would not be bit-exact, and the rounding would depend on the hidden pose.)
        restore()
        return original_step_action(action)

    def initialize_episode(env_idx: torch.Tensor, options: dict) -> None:
        # A reset must start from the true poses too, not from the last step's hidden ones (objects
        # that the task does not re-place would otherwise stay parked 1000 m up).
        restore()
        original_initialize_episode(env_idx, options)

    env.evaluate = evaluate
    env._step_action = step_action
    env._initialize_episode = initialize_episode


# ----------------------------------------------------------------------------------------------------------
# Memory-state observations
# ----------------------------------------------------------------------------------------------------------
def _shown(pos: torch.Tensor) -> torch.Tensor:
    """(B, 1) float flag: 1 where the object is shown (not parked at z + 1000 by the task)."""
    return (pos[:, 2:3] < _HIDDEN_Z).to(torch.float32)


def _visible_position(pos: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, 4) [visible, x, y, z] with the position zeroed while the object is not visible."""
    return torch.cat([visible, pos * visible], dim=1)


class MemoryStateObserver:
    """Builds the ``memory-state`` vector of a MIKASA task from its live simulation state.

    The vector is what a camera could see, as numbers: robot proprioception (qpos, qvel, TCP pose), and
    for each task object its position while it is shown (with a shown flag), never the task's hidden
    variables (``oracle_info``, the true colour/shape/sequence, velocities for Intercept, the initial
    orientation for Rotate, the initial region for TakeItBack, ...). Per-family choices: docs/mikasa.md.

    :param env: the unwrapped ManiSkill env of the task
    :param family: the task family (a key of ``MIKASA_FAMILIES``)
    """

    def __init__(self, env: Any, family: str) -> None:
        if family == "ShellGame" and type(env).__name__ == "ShellGamePickEnv":
            raise ValueError(
                "mikasa: obs_mode='memory-state' is not defined for ShellGamePick: whether the ball under a "
                "lifted mug is visible depends on the mug's 3D pose and the camera, which a state vector cannot "
                "reproduce faithfully; use obs_mode='rgb'"
            )
        self.env = env
        self.family = family
        self.dim = int(self(check=True).shape[1])

    def _objects(self) -> list:
        env = self.env
        if self.family in ("RememberColor", "SeqOfColors", "BunchOfColors", "ChainOfColors"):
            # Slot k always holds the cube of colour k, so the slot order carries the colour.
            return [env.cubes[k] for k in sorted(env.cubes)]
        if self.family in ("RememberShape", "RememberShapeAndColor"):
            return [env.shapes[k] for k in sorted(env.shapes)]
        raise KeyError(self.family)

    def __call__(self, check: bool = False) -> torch.Tensor:
        env = self.env
        agent = env.agent
        parts = [agent.robot.get_qpos(), agent.robot.get_qvel(), agent.tcp.pose.raw_pose]
        fam = self.family
        if fam in (
            "RememberColor",
            "RememberShape",
            "RememberShapeAndColor",
            "SeqOfColors",
            "BunchOfColors",
            "ChainOfColors",
        ):
            for obj in self._objects():
                pos = obj.pose.p
                parts.append(_visible_position(pos, _shown(pos)))
        elif fam == "Intercept":
            # The ball and the goal are always in view; the velocity (the answer, oracle_info) is not:
            # it has to be inferred from successive positions.
            parts += [env.ball.pose.p, env.goal_region.pose.p]
        elif fam == "InterceptGrab":
            parts.append(env.ball.pose.p)
        elif fam == "Rotate":
            # The target angle is the task's instruction (MIKASA feeds it to its agents as task_cue); the
            # peg's current pose is visible; its initial orientation must be remembered.
            parts += [env.peg.pose.raw_pose, env.target_angle.to(torch.float32).reshape(-1, 1)]
        elif fam == "TakeItBack":
            # The initial region is never rendered (a hidden object): the agent must remember where the
            # cube started. The goal and the "go back" marker are shown while the task shows them.
            parts.append(env.cube.pose.raw_pose)
            for region in (env.goal_region, env.changed_goal_region):
                pos = region.pose.p
                parts.append(_visible_position(pos, _shown(pos)))
        elif fam == "ShellGame":
            mugs = [env.mug_left, env.mug_center, env.mug_right]
            mug_pos = [m.pose.p for m in mugs]
            for pos in mug_pos:
                parts.append(_visible_position(pos, _shown(pos)))
            ball = env.red_ball.pose.p
            # The ball is seen while the mugs are lifted away (the cue) or once no mug covers it.
            covered = torch.zeros(ball.shape[0], dtype=torch.bool, device=ball.device)
            for pos in mug_pos:
                near = torch.linalg.norm(pos[:, :2] - ball[:, :2], dim=1) < _MUG_COVER_RADIUS
                covered |= near & (pos[:, 2] < _HIDDEN_Z)
            parts.append(_visible_position(ball, (~covered).to(torch.float32).unsqueeze(1)))
            # ShellGamePush's goal_site is a hidden object (never rendered), so it is not shown here either.
        else:  # pragma: no cover - every family is handled above
            raise KeyError(fam)
        return torch.cat([p.to(torch.float32).reshape(p.shape[0], -1) for p in parts], dim=1)


# ----------------------------------------------------------------------------------------------------------
# The batched core shared by both backends
# ----------------------------------------------------------------------------------------------------------
class MikasaCore:
    """One ManiSkill env of ``num_envs`` sub-envs, with observations, rewards and episode bookkeeping as
    batched torch tensors on the simulation device (no per-env Python loops).

    :param task: task name without ``-v0`` (one of ``MIKASA_TASKS``)
    :param num_envs: number of parallel sub-envs (1 on ``physx_cpu``)
    :param obs_mode: ``"memory-state"``, ``"state"`` or ``"rgb"``
    :param reward_mode: ``"dense"``, ``"normalized_dense"`` or ``"sparse"`` (cast to float)
    :param prev_action: append the previous action and reward to the vector observation (zeros at start)
    :param sim_backend: ManiSkill ``sim_backend`` (``"physx_cpu"`` or ``"physx_cuda"``)
    :param render_backend: ManiSkill ``render_backend`` (``"cpu"`` for lavapipe, ``"gpu"``)
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
        sim_backend: str = "physx_cpu",
        render_backend: str = "cpu",
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
        self.num_envs, self.obs_mode, self.prev_action = num_envs, obs_mode, prev_action
        self.ignore_terminations = ignore_terminations
        self.max_episode_steps = int(max_episode_steps or REGISTERED_ENVS[env_id].max_episode_steps)
        # memory-state is built from the live simulation; "state_dict" is the cheapest mode that still
        # runs the task's evaluate()/obs code (we ignore its content).
        raw_mode = {"memory-state": "state_dict", "state": "state", "rgb": "rgb"}[obs_mode]
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
        return [self.prev_actions, self.prev_rewards]

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
        vec = [v.to(torch.float32).reshape(v.shape[0], -1) for v in vec] + self._vector_extra()
        return {"rgb": rgb.contiguous(), "state": torch.cat(vec, dim=1)}

    @staticmethod
    def _make_space(obs: Union[torch.Tensor, dict[str, torch.Tensor]]) -> spaces.Space:
        def box(x: torch.Tensor) -> spaces.Box:
            return spaces.Box(-np.inf, np.inf, tuple(x.shape[1:]), np.float32)

        if isinstance(obs, dict):
            return spaces.Dict(
                {"rgb": spaces.Box(0, 255, tuple(obs["rgb"].shape[1:]), np.uint8), "state": box(obs["state"])}
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


# ----------------------------------------------------------------------------------------------------------
# CPU backend: one env per process
# ----------------------------------------------------------------------------------------------------------
class MikasaGymEnv(gym.Env):
    """A single MIKASA-Robo env (ManiSkill ``physx_cpu``, ``num_envs=1``) with numpy observations.

    Episodes end at success (unless ``ignore_terminations``) or at ``max_episode_steps`` (truncation). The
    last step's info has ``is_success`` (= ``success_once``), ``success_once`` and ``success_at_end``.

    :param task: task name without ``-v0``
    :param core_kwargs: keyword arguments of :class:`MikasaCore` (``num_envs`` is fixed to 1)
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
    """Build one monitored CPU env (module-level so that SubprocVecEnv can pickle it)."""
    env = MikasaGymEnv(task, **core_kwargs)
    env.action_space.seed(seed + rank)
    filename = None
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
        filename = os.path.join(monitor_dir, str(rank))
    return Monitor(env, filename=filename, info_keywords=INFO_KEYWORDS)


# ----------------------------------------------------------------------------------------------------------
# GPU backend: the whole batch as one SB3 VecEnv
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
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
    :param prev_action: append the previous action and reward to the vector observation (zeros at
        episode start): the flat observation in ``state``/``memory-state`` modes, the ``"state"`` entry in
        ``rgb`` mode
    :param env_kwargs: ``obs_mode`` (``"memory-state"`` default, ``"state"``, ``"rgb"``), ``reward_mode``
        (``"normalized_dense"`` default, ``"dense"``, ``"sparse"``), ``backend`` (``"cpu"`` default,
        ``"gpu"``), and pass-through: ``control_mode``, ``max_episode_steps``, ``ignore_terminations``,
        ``gpu_consistent_hiding``, ``sim_backend``, ``render_backend``, ``sensor_configs``,
        ``robot_init_qpos_noise``
    :param monitor_dir: where Monitor/VecMonitor write their CSV files (None: not written)
    :param vec_env_cls: ``"dummy"`` or ``"subproc"`` for the CPU backend (``"dummy"`` with ``n_envs > 1``
        switches to ``"subproc"``, since ManiSkill's CPU simulation allows one env per process); ignored by
        the GPU backend, which is one batched VecEnv
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

    core_kwargs.setdefault("sim_backend", "physx_cpu")
    core_kwargs.setdefault("render_backend", "cpu")
    kind = _normalize_vec_env_cls(vec_env_cls)
    if kind == "dummy" and n_envs > 1:
        warnings.warn("mikasa: the CPU backend runs one ManiSkill env per process; using SubprocVecEnv")
        kind = "subproc"
    # Resolve the Vulkan driver now, so that subprocesses inherit it.
    _import_mikasa()
    env_fns: list[Callable[[], gym.Env]] = [
        functools.partial(_make_cpu_env, rank, task, seed, monitor_dir, core_kwargs) for rank in range(n_envs)
    ]
    venv = DummyVecEnv(env_fns) if kind == "dummy" else SubprocVecEnv(env_fns)
    venv.seed(seed)
    return venv
