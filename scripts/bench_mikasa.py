"""Measure env-steps/s of MIKASA-Robo through the SB3 adapter (random actions, no learning).

Usage::

    python scripts/bench_mikasa.py                                  # RememberColor3, memory-state + state + rgb, CPU
    python scripts/bench_mikasa.py --task RememberColor9 --modes rgb --steps 50
    python scripts/bench_mikasa.py --backend gpu --n-envs 512 --steps 2000   # on a CUDA machine

Each figure is the mean over ``--steps`` vectorized steps after a short warm-up, counted in env-steps
(``n_envs`` per vectorized step), with episode resets included.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.mikasa import make_mikasa_vec_env  # noqa: E402


def bench(task: str, obs_mode: str, backend: str, n_envs: int, steps: int, vec_env_cls: str) -> float:
    """Env-steps per second of one configuration.

    :param task: MIKASA task without ``-v0``
    :param obs_mode: ``memory-state``, ``state`` or ``rgb``
    :param backend: ``cpu`` or ``gpu``
    :param n_envs: number of environments
    :param steps: vectorized steps to time
    :param vec_env_cls: ``dummy`` or ``subproc`` (CPU backend)
    :return: env-steps per second
    """
    venv = make_mikasa_vec_env(task, n_envs, 0, False, {"obs_mode": obs_mode, "backend": backend}, None, vec_env_cls)
    rng = np.random.default_rng(0)
    shape = (n_envs,) + venv.action_space.shape
    venv.reset()
    for _ in range(min(5, steps)):  # warm-up: first renders/allocations
        venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
    start = time.perf_counter()
    for _ in range(steps):
        venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
    elapsed = time.perf_counter() - start
    venv.close()
    return steps * n_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RememberColor3")
    parser.add_argument("--modes", nargs="+", default=["memory-state", "state", "rgb"])
    parser.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="default: 1000 (state modes), 30 (rgb)")
    parser.add_argument("--vec-env-cls", default="dummy", choices=["dummy", "subproc"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # the env work is single-threaded; extra torch threads only contend
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}")
    for mode in args.modes:
        steps = args.steps or (30 if mode == "rgb" else 1000)
        rate = bench(args.task, mode, args.backend, args.n_envs, steps, args.vec_env_cls)
        print(f"{args.task} {mode:13s} backend={args.backend} n_envs={args.n_envs}: {rate:8.1f} env-steps/s")


if __name__ == "__main__":
    main()
