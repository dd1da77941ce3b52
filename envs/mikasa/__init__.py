"""MIKASA-Robo (memory-intensive manipulation on ManiSkill3) as Stable-Baselines3 vectorized envs.

Entry point: :func:`make_mikasa_vec_env`, called by the env registry for ``mikasa-<Task>`` names.
ManiSkill itself is imported only when an env is made, so the task list is importable without it.

Modules:

- ``tasks``: the 32 task names, their families, the valid options;
- ``runtime``: software Vulkan, the ManiSkill/MIKASA imports, the asset check;
- ``hiding``: the CPU-simulation fix that makes MIKASA's object hiding visual-only, as on the GPU;
- ``observations``: the ``memory-state`` observation (what a camera could see, as numbers);
- ``core``: :class:`MikasaCore`, one ManiSkill env with batched observations and bookkeeping;
- ``cpu``: ``backend="cpu"``, one ManiSkill env (``physx_cpu``) per process, as a gymnasium env
  (:class:`MikasaGymEnv`) inside SB3's ``DummyVecEnv`` / ``SubprocVecEnv``;
- ``batched``: ``backend="gpu"``, one batched ManiSkill env (``physx_cuda``, ``num_envs=n_envs``) as one
  SB3 ``VecEnv`` (:class:`MikasaBatchedVecEnv`) that steps the whole batch in one call;
- ``make``: :func:`make_mikasa_vec_env`.

Observation modes (``env_kwargs["obs_mode"]``): ``"memory-state"`` (default), ``"state"``, ``"rgb"``.
See docs/mikasa.md for what each mode shows per task family, and why.
"""

from envs.mikasa.batched import MikasaBatchedVecEnv
from envs.mikasa.core import MikasaCore
from envs.mikasa.cpu import MikasaGymEnv
from envs.mikasa.make import make_mikasa_vec_env
from envs.mikasa.observations import MemoryStateObserver
from envs.mikasa.runtime import _import_mikasa
from envs.mikasa.tasks import (
    BACKENDS,
    ENV_KWARGS_KEYS,
    INFO_KEYWORDS,
    MIKASA_FAMILIES,
    MIKASA_TASKS,
    OBS_MODES,
    REWARD_MODES,
    TASK_FAMILY,
)

__all__ = [
    "BACKENDS",
    "ENV_KWARGS_KEYS",
    "INFO_KEYWORDS",
    "MIKASA_FAMILIES",
    "MIKASA_TASKS",
    "OBS_MODES",
    "REWARD_MODES",
    "TASK_FAMILY",
    "MemoryStateObserver",
    "MikasaBatchedVecEnv",
    "MikasaCore",
    "MikasaGymEnv",
    "make_mikasa_vec_env",
]
