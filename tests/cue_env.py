"""A minimal memory task for the tests: a cue shown at step 0 only, acted on at the last step."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueRecallEnv(gym.Env):
    """Observation ``[cue is A, cue is B, decide now]``; the cue is visible at step 0 only, the
    decision comes at step ``length - 1``, where action == cue earns +1 and ends the episode.
    Actions before the decision are ignored. A memoryless policy succeeds half of the time."""

    def __init__(self, length: int = 5):
        self.length = length
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        if self.t == self.length - 1:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        if self.t == self.length - 1:
            success = int(action) == self.cue
            return self._obs(), float(success), True, False, {"is_success": success}
        self.t += 1
        return self._obs(), 0.0, False, False, {}
