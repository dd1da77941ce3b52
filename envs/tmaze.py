"""The passive T-Maze (Ni et al. 2023, "When Do Transformers Shine in RL?"): a gymnasium env and a natively vectorized VecEnv that matches it step for step.

::

               up goal
    start ----------------- junction
               down goal

The agent starts at cell 0 of a corridor whose junction is cell ``length``.
Only the first observation (step 0) carries the cue: which goal, up or down,
is the right one. Walking right ``length`` times reaches the junction; there,
going up or down ends the episode (``terminated``) with reward 1 for the cued
goal and 0 for the other one. The horizon is ``length + 1`` steps: an agent
that has not chosen by then is cut off (``terminated``, reward 0). The optimal
schedule is therefore right at every step ``t <= length`` and the choice at
step ``length + 1``; every episode lasts exactly ``length + 1`` steps.

The horizon is part of the task (a finite-horizon problem, as in Ni et al.'s
code), so the cut-off is ``terminated``, not ``truncated``. With ``truncated``,
SB3 and RecurrentPPO bootstrap from the value of the cut-off state, which pays an
agent that waits at the junction (or stalls in the corridor) about what a guess
would earn: "never choose" and "stop walking" become stable fixed points of PPO.

Rewards (as in Ni et al. 2023 and its Memory-RL code): at each step
``t <= length`` a penalty ``-1 / length`` if the agent lags behind the optimal
schedule, i.e. its position after the step is ``x_t < t``; at the last step
the goal reward (1 or 0) and no penalty. Returns lie in ``[-1, 1]``; the
optimal return is exactly 1. Note that the penalty counts lagging steps, not
idle ones: standing still once early costs ``-1/length`` at every later step,
because the agent never catches up.

Actions (``Discrete(4)``): ``0`` right (forward), ``1`` up, ``2`` left (back),
``3`` down. Moves into walls leave the agent in place (up/down anywhere but the
junction, left at the start, right at the junction).

Observation (``Box(0, 1, (3,), float32)``): ``[cue_up, cue_down, at_junction]``.
``cue_*`` are non-zero only in the reset observation; ``at_junction`` is 1 when
the agent stands at the junction. There is no position or time feature, so the
cue must be remembered for ``length`` steps.

``info["is_success"]`` (True iff the cued goal was chosen) is set at the last
step of every episode.

Goals are drawn from a counter-based hash of ``(seed, episode index)`` rather
than a sequential RNG, so the vectorized :class:`TMazeVecEnv` draws its goals
with a few numpy operations and still reproduces, episode for episode, a
``DummyVecEnv`` of :class:`TMazeEnv` seeded the same way (env ``i`` gets
``seed + i``, as SB3 seeds vectorized environments).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

RIGHT, UP, LEFT, DOWN = 0, 1, 2, 3
N_ACTIONS = 4
OBS_DIM = 3
TMAZE_ID = "TMaze-v0"

__all__ = [
    "TMazeEnv",
    "TMazeVecEnv",
    "TMAZE_ID",
    "RIGHT",
    "UP",
    "LEFT",
    "DOWN",
    "optimal_action",
    "tmaze_observation_space",
]

_MASK64 = (1 << 64) - 1
# Per-action change of the corridor position; clipping to [0, length] makes walls.
_MOVE = np.array([1, 0, -1, 0], dtype=np.int64)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic is intended)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _goal_up(base_seed: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """
    Whether the cued goal is "up", for each (seed, episode index) pair.

    :param base_seed: uint64 array of per-env seeds
    :param episode: uint64 array of per-env episode indices
    :return: bool array
    """
    return (_mix64(_mix64(base_seed) ^ episode) >> np.uint64(63)) == 0


def tmaze_observation_space(prev_action: bool = False) -> spaces.Box:
    """
    :param prev_action: include the previous action (one-hot) and reward, as
        :func:`envs.wrappers.wrap_env` appends them
    :return: the observation space of the T-Maze
    """
    if not prev_action:
        return spaces.Box(low=0.0, high=1.0, shape=(OBS_DIM,), dtype=np.float32)
    low = np.zeros(OBS_DIM + N_ACTIONS + 1, dtype=np.float32)
    high = np.ones(OBS_DIM + N_ACTIONS + 1, dtype=np.float32)
    low[-1], high[-1] = -np.inf, np.inf
    return spaces.Box(low=low, high=high, dtype=np.float32)


def optimal_action(obs: np.ndarray, cue_up: np.ndarray | bool) -> np.ndarray | int:
    """
    The optimal T-Maze action given the current observation and the remembered cue.

    :param obs: observation(s), ``[..., 3]`` or longer (prev-action features ignored)
    :param cue_up: whether the cue at step 0 said "up" (per env)
    :return: action(s): right in the corridor, the cued turn at the junction
    """
    at_junction = np.asarray(obs)[..., 2] > 0.5
    turn = np.where(cue_up, UP, DOWN)
    out = np.where(at_junction, turn, RIGHT)
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def _check_length(length: int) -> int:
    if int(length) != length or length < 1:
        raise ValueError(f"T-Maze corridor length must be a positive integer, got {length!r}")
    return int(length)


class TMazeEnv(gym.Env):
    """
    Passive T-Maze as a gymnasium environment (see the module docstring).

    :param length: corridor length (steps from the start to the junction)
    :param penalty: reward at each step ``t <= length`` at which the agent lags
        behind the optimal schedule; ``-1 / length`` by default
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 10, penalty: float | None = None) -> None:
        super().__init__()
        self.length = _check_length(length)
        self.penalty = -1.0 / self.length if penalty is None else float(penalty)
        self.observation_space = tmaze_observation_space(prev_action=False)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._base_seed: int | None = None
        self._episode = -1
        self._x = 0
        self._t = 0
        self._goal_up = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        :param seed: restarts the goal sequence (goal of episode ``k`` after seeding
            is a fixed function of ``(seed, k)``)
        :param options: ``{"goal_up": bool}`` forces the cue of this episode
        :return: the observation with the cue, and an empty info dict
        """
        super().reset(seed=seed)
        if seed is not None:
            self._base_seed = seed & _MASK64
            self._episode = -1
        elif self._base_seed is None:
            self._base_seed = int(self.np_random.integers(0, 2**63))
        self._episode += 1
        if options is not None and "goal_up" in options:
            self._goal_up = bool(options["goal_up"])
        else:
            up = _goal_up(
                np.array([self._base_seed], dtype=np.uint64), np.array([self._episode], dtype=np.uint64)
            )
            self._goal_up = bool(up[0])
        self._x = 0
        self._t = 0
        obs = np.array([float(self._goal_up), float(not self._goal_up), 0.0], dtype=np.float32)
        return obs, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = int(action)
        if not 0 <= action < N_ACTIONS:
            raise ValueError(f"T-Maze action must be in 0..3, got {action}")
        at_junction = self._x == self.length
        self._t += 1
        self._x = min(max(self._x + int(_MOVE[action]), 0), self.length)
        chose = at_junction and action in (UP, DOWN)
        info: dict[str, Any] = {}
        terminated = chose or self._t > self.length  # the horizon ends the task (module docstring)
        if terminated:
            success = chose and (action == UP) == self._goal_up
            reward = 1.0 if success else 0.0
            info["is_success"] = success
        else:
            reward = self.penalty if self._x < self._t else 0.0
        obs = np.array([0.0, 0.0, float(self._x == self.length)], dtype=np.float32)
        return obs, reward, terminated, False, info


class TMazeVecEnv(VecEnv):
    """
    Natively vectorized passive T-Maze: numpy over all envs at once, SB3 ``VecEnv`` API.

    Steps cost a handful of numpy operations on arrays of ``n_envs`` elements, so
    corridors of a million cells are practical. Auto-resets like SB3's vectorized
    environments (``terminal_observation``, ``TimeLimit.truncated`` and
    ``is_success`` in the info of a finished episode). Every episode lasts exactly
    ``length + 1`` steps, so all envs share the step counter and finish together.

    :param length: corridor length
    :param n_envs: number of environments
    :param prev_action: append the previous action (one-hot) and previous reward to
        the observation, exactly as :func:`envs.wrappers.wrap_env` does for
        :class:`TMazeEnv`: ``[cue_up, cue_down, at_junction, a_right, a_up, a_left, a_down, prev_reward]``
    :param penalty: lagging penalty, ``-1 / length`` by default
    """

    def __init__(
        self, length: int = 10, n_envs: int = 1, prev_action: bool = False, penalty: float | None = None
    ) -> None:
        # VecEnv.__init__ queries `render_mode` through get_attr.
        self.render_mode = None
        super().__init__(n_envs, tmaze_observation_space(prev_action), spaces.Discrete(N_ACTIONS))
        self.length = _check_length(length)
        self.penalty = -1.0 / self.length if penalty is None else float(penalty)
        self.prev_action = prev_action
        n = n_envs
        self._base_seed = np.random.SeedSequence().generate_state(n, dtype=np.uint64)
        self._episode = np.full(n, -1, dtype=np.int64)
        self._x = np.zeros(n, dtype=np.int64)
        self._t = 0
        self._goal_up = np.ones(n, dtype=bool)
        self._reset_obs = np.zeros((n, self.observation_space.shape[0]), dtype=np.float32)
        self._actions = np.zeros(n, dtype=np.int64)
        # Lookup tables: on arrays of a few elements, numpy's per-call overhead
        # dominates, and `take` is among the cheapest calls. Row `a` of the
        # observation table is the corridor observation after action `a`
        # (prev-action one-hot included; the reward column is filled afterwards).
        dim = self.observation_space.shape[0]
        self._obs_table = np.zeros((N_ACTIONS, dim), dtype=np.float32)
        if prev_action:
            self._obs_table[:, OBS_DIM : OBS_DIM + N_ACTIONS] = np.eye(N_ACTIONS, dtype=np.float32)
        self._reward_table = np.array([0.0, self.penalty], dtype=np.float32)  # indexed by "lagging"

    # --- episode bookkeeping -------------------------------------------------

    def _new_episodes(self) -> None:
        """Start a new episode in every env (draw goals, put agents at the start)."""
        self._episode += 1
        self._goal_up = _goal_up(self._base_seed, self._episode.astype(np.uint64))
        self._x[:] = 0
        self._t = 0
        self._reset_obs[:] = 0.0
        self._reset_obs[:, 0] = self._goal_up
        self._reset_obs[:, 1] = ~self._goal_up

    def reset(self) -> VecEnvObs:
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._base_seed[i] = np.uint64(seed & _MASK64)
                self._episode[i] = -1
        self._new_episodes()
        for i, opt in enumerate(self._options):
            if opt and "goal_up" in opt:
                up = bool(opt["goal_up"])
                self._goal_up[i] = up
                self._reset_obs[i, 0], self._reset_obs[i, 1] = float(up), float(not up)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._reset_obs.copy()

    # --- stepping ----------------------------------------------------------------

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        a = self._actions
        x = self._x
        n = self.num_envs
        self._t += 1
        t = self._t
        if t <= self.length:
            # Corridor phase: no episode can end, and x <= t <= length, so only
            # the wall at the start can be hit.
            x += _MOVE.take(a)
            np.maximum(x, 0, out=x)
            rewards = self._reward_table.take((x < t).view(np.uint8))
            obs = self._obs_table.take(a, axis=0)
            if t == self.length:
                obs[:, 2] = x == self.length
            if self.prev_action:
                obs[:, -1] = rewards
            return obs, rewards, np.zeros(n, dtype=bool), [{"TimeLimit.truncated": False} for _ in range(n)]

        # Last step: the choice at the junction, or the horizon.
        if np.any((a < 0) | (a >= N_ACTIONS)):
            raise ValueError(f"T-Maze actions must be in 0..3, got {a}")
        at_junction = x == self.length
        x += _MOVE.take(a)
        np.maximum(x, 0, out=x)
        np.minimum(x, self.length, out=x)
        chose = at_junction & ((a == UP) | (a == DOWN))
        success = chose & ((a == UP) == self._goal_up)
        rewards = success.astype(np.float32)
        obs = self._obs_table.take(a, axis=0)
        obs[:, 2] = x == self.length
        if self.prev_action:
            obs[:, -1] = rewards
        infos = [
            {
                "is_success": bool(success[i]),
                "TimeLimit.truncated": False,
                "terminal_observation": obs[i],
            }
            for i in range(n)
        ]
        self._new_episodes()
        return self._reset_obs.copy(), rewards, np.ones(n, dtype=bool), infos

    # --- the rest of the VecEnv API ---------------------------------------------

    def close(self) -> None:
        pass

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        # All envs share one set of parameters (e.g. `length`); per-env values make no sense here.
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def register_tmaze() -> None:
    """Register ``TMaze-v0`` (kwargs ``length``, ``penalty``) with gymnasium, once."""
    if TMAZE_ID not in gym.envs.registry:
        gym.register(id=TMAZE_ID, entry_point="envs.tmaze:TMazeEnv", kwargs={"length": 10})


register_tmaze()
