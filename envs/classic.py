"""Memory tasks made of small gymnasium envs: velocity-masked classic control (rl-zoo3's names) and
"name the symbol seen k steps back", registered as gymnasium ids so every `--env` path accepts them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class MaskVelocity(gym.ObservationWrapper):
    """Zero the velocity entries of a classic-control observation, so that the task needs memory
    (two positions in a row give the velocity). The observation keeps its shape, as in rl-zoo3.

    :param env: CartPole or Pendulum
    """

    VELOCITY_ENTRIES = {"CartPole": [1, 3], "Pendulum": [2]}

    def __init__(self, env: gym.Env):
        super().__init__(env)
        name = env.unwrapped.__class__.__name__.removesuffix("Env")
        if name not in self.VELOCITY_ENTRIES:
            raise ValueError(f"MaskVelocity knows {sorted(self.VELOCITY_ENTRIES)}, not {name}")
        self.mask = np.ones(env.observation_space.shape, dtype=np.float32)
        self.mask[self.VELOCITY_ENTRIES[name]] = 0.0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation * self.mask).astype(np.float32)


def make_masked(env_id: str, **kwargs) -> gym.Env:
    return MaskVelocity(gym.make(env_id, **kwargs))


class RecallBackEnv(gym.Env):
    """Each step shows one of ``n_symbols`` symbols (one-hot); from step ``k`` on, the reward pays for
    naming the symbol shown ``k`` steps earlier. Episodes last ``length`` steps; the return is
    normalised so that a perfect policy earns 1.0 and guessing ``1 / n_symbols``.

    :param k: how far back the answer lies
    :param length: steps per episode
    :param n_symbols: alphabet size
    """

    def __init__(self, k: int = 3, length: int = 48, n_symbols: int = 4):
        if not 1 <= k < length:
            raise ValueError(f"k must lie in [1, length - 1] = [1, {length - 1}], got {k}")
        self.k, self.length, self.n_symbols = k, length, n_symbols
        self.observation_space = spaces.Box(0.0, 1.0, (n_symbols,), np.float32)
        self.action_space = spaces.Discrete(n_symbols)

    def _obs(self) -> np.ndarray:
        return np.eye(self.n_symbols, dtype=np.float32)[self.symbols[self.t]]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.symbols = self.np_random.integers(self.n_symbols, size=self.length)
        return self._obs(), {}

    def step(self, action):
        reward = 0.0
        if self.t >= self.k:
            reward = float(int(action) == self.symbols[self.t - self.k]) / (self.length - self.k)
        self.t += 1
        done = self.t == self.length
        return (np.zeros(self.n_symbols, np.float32) if done else self._obs()), reward, done, False, {}


def register() -> None:
    """Register ``CartPoleNoVel-v1``, ``PendulumNoVel-v1`` (rl-zoo3's ids) and ``RecallBack-v0``."""
    specs = {
        "CartPoleNoVel-v1": dict(entry_point=make_masked, kwargs=dict(env_id="CartPole-v1")),
        "PendulumNoVel-v1": dict(entry_point=make_masked, kwargs=dict(env_id="Pendulum-v1")),
        "RecallBack-v0": dict(entry_point=RecallBackEnv),
    }
    for env_id, spec in specs.items():
        if env_id not in gym.registry:
            gym.register(env_id, **spec)
