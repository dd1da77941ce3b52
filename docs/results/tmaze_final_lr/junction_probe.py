"""The action probabilities of T-Maze models at the junction: which of them still choose there.

Walks each model deterministically down a tmaze-30 corridor (8 episodes, both cues) and prints its
probabilities of right / up / left / down at the junction. A run caught in the never-choose trap keeps
walking right there (P(right) ~ 1), so up and down are no longer sampled in training.

    python docs/results/tmaze_final_lr/junction_probe.py docs/results/tmaze_final_lr/tmaze-30/runs/*/final_model.zip
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from agents.registry import ALGOS  # noqa: E402
from envs import make_vec_env  # noqa: E402
from eval_tmaze_lengths import action_probabilities  # noqa: E402


def junction_probabilities(path: str, episodes: int = 8) -> np.ndarray:
    """``(episodes, 4)`` action probabilities at the junction of tmaze-30."""
    algo = "ppo-lstm" if "ppo-lstm" in path else "ppo-elmur"
    model = ALGOS[algo].load_class().load(path)
    venv = make_vec_env("tmaze-30", n_envs=episodes, seed=1)
    obs, state, starts = venv.reset(), None, np.ones(episodes, dtype=bool)
    while obs[0, 2] < 0.5:  # every env walks in step: all reach the junction together
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = venv.step(actions)
        if starts.any():
            raise RuntimeError(f"{path}: an episode ended before the junction")
    return action_probabilities(model, obs, state, starts)


if __name__ == "__main__":
    print("| model | P(right) | P(up) | P(left) | P(down) |\n|---|---|---|---|---|")
    for path in sys.argv[1:]:
        mean = junction_probabilities(path).mean(axis=0)
        print(f"| {Path(path).parent.name} | " + " | ".join(f"{p:.5f}" for p in mean) + " |")
