"""Test tasks with a known memory horizon: recall the symbol shown k steps back, and random-length episodes."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RecallBackEnv(gym.Env):
    """Each step shows one of ``n_symbols`` symbols (one-hot); from step ``k`` on, the reward is +1
    for naming the symbol shown ``k`` steps earlier and 0 otherwise. Episodes last ``length`` steps.
    The return is normalised to 1.0 for a perfect policy; guessing earns ``1 / n_symbols``."""

    def __init__(self, k: int = 2, length: int = 12, n_symbols: int = 2):
        self.k, self.length, self.n_symbols = k, length, n_symbols
        self.observation_space = spaces.Box(0.0, 1.0, (n_symbols,), np.float32)
        self.action_space = spaces.Discrete(n_symbols)

    def _obs(self) -> np.ndarray:
        return np.eye(self.n_symbols, dtype=np.float32)[self.symbols[self.t]]

    def reset(self, *, seed=None, options=None):
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


class RandomLengthEnv(gym.Env):
    """Random observations, episodes of 1 to ``max_length`` steps (some shorter than any cache)."""

    def __init__(self, max_length: int = 14):
        self.max_length = max_length
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(1, self.max_length + 1))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        truncated = self.t == self.length and self.t % 2 == 0  # some truncations: bootstrap under the cache too
        terminated = self.t == self.length and not truncated
        return obs, float(action), terminated, truncated, {}
