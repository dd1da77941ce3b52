"""The MIKASA-Robo task list, the valid adapter options, and their one-line validation."""

from __future__ import annotations

from typing import Any

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
# Keys of env_kwargs besides obs_mode/reward_mode/backend/prev_reward (documented in make_mikasa_vec_env).
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
ENV_KWARGS_KEYS = ("obs_mode", "reward_mode", "backend", "prev_reward") + PASS_THROUGH_KEYS
INFO_KEYWORDS = ("is_success", "success_once", "success_at_end")


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"mikasa: {name}={value!r} is not valid; choose one of {list(valid)}")
