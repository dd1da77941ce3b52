"""The return of an arm that never moves, on memory-state RememberColor3 (normalized dense reward).

A reference for the learning runs beside this script: a zero action holds the joint targets, so the
robot earns the reward's "static" term every step and nothing else.

    python docs/results/mikasa_1m/still_arm_probe.py --episodes 8
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from envs.mikasa.make import make_mikasa_vec_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RememberColor3")
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()
    venv = make_mikasa_vec_env(args.task, n_envs=1, seed=0, prev_action=False, env_kwargs={}, monitor_dir=None, vec_env_cls=None)
    venv.reset()
    returns, successes, total = [], [], 0.0
    while len(returns) < args.episodes:
        _, reward, done, info = venv.step(np.zeros((1, *venv.action_space.shape), dtype=np.float32))
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            successes.append(bool(info[0].get("is_success", False)))
            total = 0.0
    print(f"{args.task}, arm still: return {np.mean(returns):.2f} (min {np.min(returns):.2f}, max {np.max(returns):.2f}), "
          f"success {np.mean(successes):.2f} over {args.episodes} episodes")  # fmt: skip


if __name__ == "__main__":
    main()
