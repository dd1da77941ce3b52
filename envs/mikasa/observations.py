"""The ``memory-state`` observation: what a camera could see of a MIKASA task, as numbers."""

from __future__ import annotations

from typing import Any

import torch

# MIKASA hides objects by placing them 1000 m up (z += 1000); anything this high is "not shown".
_HIDDEN_Z = 100.0
# Horizontal radius within which a mug covers the ball in ShellGame (mug 025_mug is ~6 cm wide at the rim).
_MUG_COVER_RADIUS = 0.05


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
