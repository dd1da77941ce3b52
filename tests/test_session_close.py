"""Closing the envs after an interrupt must not hang (a SIGTERM during a SubprocVecEnv step did)."""

import threading

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

from agents.session import _close


def test_close_returns_after_a_step_interrupted_between_worker_results():
    venv = VecNormalize(SubprocVecEnv([lambda: gym.make("CartPole-v1")] * 2))
    venv.reset()
    inner = venv.unwrapped
    inner.step_async(np.zeros(2, dtype=np.int64))
    inner.remotes[0].recv()  # the interrupt struck after the first worker's result was read
    closer = threading.Thread(target=_close, args=(venv,), daemon=True)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "closing the envs hung on the interrupted step"
    assert all(not process.is_alive() for process in inner.processes)
