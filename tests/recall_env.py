"""Test tasks: random-length episodes, and the recall task of the benchmark layer (envs.classic)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.classic import RecallBackEnv  # noqa: F401  (re-exported for the tests)


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
