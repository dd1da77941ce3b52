"""CPU-simulation fix: MIKASA's pose-based hiding made visual-only, as it is on the GPU simulation."""

from __future__ import annotations

from typing import Any

import torch


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
