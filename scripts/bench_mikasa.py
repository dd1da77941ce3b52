"""Measure env-steps/s of MIKASA-Robo through the SB3 adapter: stepping alone, or training.

Usage::

    python scripts/bench_mikasa.py                                  # stepping: RememberColor3, memory-state + state + rgb
    python scripts/bench_mikasa.py --task RememberColor9 --modes rgb --steps 50
    python scripts/bench_mikasa.py --backend gpu --n-envs 512 --steps 2000   # on a CUDA machine
    python scripts/bench_mikasa.py --train                          # training: ppo-elmur, ppo-lstm, ppo (preset n_envs)
    python scripts/bench_mikasa.py --train --n-envs 1 4 --train-steps 4096 --hp n_steps=256

Stepping: random actions, the mean over ``--steps`` vectorized steps after a short warm-up, counted in
env-steps (``n_envs`` per vectorized step), episode resets included.

Training (``--train``): each algorithm is built from ``agents/hyperparams/mikasa.yml`` (as
``train.py --env mikasa-<task>`` builds it: same policy, n_steps, batch_size, n_epochs, policy_kwargs,
``n_envs`` unless ``--n-envs`` is given), learns one rollout as a warm-up, then ``--train-steps`` more
env steps (rollouts and PPO updates, no evaluation) are timed. The configurations run interleaved, in
``--rounds`` rounds, so that a load change on a shared machine hits all of them alike; compare ratios
measured in the same run, not absolute figures across runs.
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

ALGOS = ("ppo-elmur", "ppo-lstm", "ppo")


def bench(task: str, obs_mode: str, backend: str, n_envs: int, steps: int, vec_env_cls: str) -> float:
    """Env-steps per second of one configuration, stepping with random actions.

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


def _parse_hp(items: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML) for the top level of the resolved preset."""
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def build_training(task: str, algo: str, n_envs: int | None, hp_overrides: dict, seed: int = 0):
    """A model of ``algo`` on ``mikasa-<task>`` as the preset defines it, and its VecEnv.

    :param task: MIKASA task without ``-v0``
    :param algo: ``ppo-elmur``, ``ppo-lstm`` or ``ppo``
    :param n_envs: number of training envs (None: the preset's ``n_envs``)
    :param hp_overrides: top-level hyperparameters to override (e.g. ``{"n_steps": 256}``)
    :param seed: seed of the model and of env 0
    :return: ``(model, venv, n_envs)``
    """
    from agents.hyperparams import load_hyperparams, to_constructor_kwargs
    from agents.registry import get_algo

    hp = load_hyperparams("mikasa", f"mikasa-{task}", algo)
    hp.update(hp_overrides)
    n_envs = int(n_envs or hp["n_envs"])
    venv = make_mikasa_vec_env(task, n_envs, seed, hp["prev_action"], hp["env_kwargs"], None, "dummy")
    spec = get_algo(algo)
    algo_kwargs, _ = to_constructor_kwargs(hp)
    policy = algo_kwargs.pop("policy", None) or spec.policy_for(venv.observation_space)
    model = spec.load_class()(policy, venv, seed=seed, device="cpu", verbose=0, **algo_kwargs)
    return model, venv, n_envs


def _cpu_seconds(venv) -> float:
    """CPU time (user + system) used so far by this process and the VecEnv's worker processes.

    On a machine shared with other jobs, wall-clock rates depend on their load; the CPU seconds spent
    per env step do much less (with two free cores, the parallel envs overlap them in wall time)."""
    import psutil

    procs = [psutil.Process()] + [psutil.Process(p.pid) for p in getattr(venv, "processes", [])]
    return float(sum(sum(p.cpu_times()[:2]) for p in procs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RememberColor3")
    parser.add_argument("--modes", nargs="+", default=["memory-state", "state", "rgb"])
    parser.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--n-envs", type=int, nargs="+", default=None, help="default: 1 (stepping), the preset's (--train)")
    parser.add_argument("--steps", type=int, default=None, help="default: 1000 (state modes), 30 (rgb)")
    parser.add_argument("--vec-env-cls", default="dummy", choices=["dummy", "subproc"])
    parser.add_argument("--train", action="store_true", help="time training (rollouts + updates) instead of stepping")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--train-steps", type=int, default=4096, help="timed env steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every configuration")
    parser.add_argument("--hp", nargs="*", default=[], help="top-level preset overrides, e.g. n_steps=256")
    parser.add_argument("--profile", default=None, help="--train: write a cProfile of the timed part here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the models are tiny and the cores are few: extra torch threads only contend
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}")
    if not args.train:
        for n_envs in args.n_envs or [1]:
            for mode in args.modes:
                steps = args.steps or (30 if mode == "rgb" else 1000)
                rate = bench(args.task, mode, args.backend, n_envs, steps, args.vec_env_cls)
                print(f"{args.task} {mode:13s} backend={args.backend} n_envs={n_envs}: {rate:8.1f} env-steps/s", flush=True)
        return

    hp = _parse_hp(args.hp)
    configs = [(algo, n) for n in (args.n_envs or [None]) for algo in args.algos]
    rates: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for algo, n in configs:
            model, venv, n_envs = build_training(args.task, algo, n, hp)
            model.learn(1)  # warm-up: one rollout and one update (first forward passes, subprocess start)
            start_steps = model.num_timesteps
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu0 = _cpu_seconds(venv)
            start = time.perf_counter()
            model.learn(args.train_steps, reset_num_timesteps=False)
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(venv) - cpu0
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(f"{args.profile}.{algo}.n{n_envs}")
            steps = model.num_timesteps - start_steps
            venv.close()
            rates.setdefault((algo, n_envs), []).append((steps / elapsed, steps / cpu))
            print(f"round {r}: {algo:9s} n_envs={n_envs:2d}: {steps / elapsed:7.1f} env-steps/s, "
                  f"{steps / cpu:6.1f} env-steps per CPU-second ({steps} steps in {elapsed:.1f} s, "
                  f"{cpu:.1f} CPU-s in all processes; load average {os.getloadavg()[0]:.1f})", flush=True)
    print("\n| algo | n_envs | training env-steps/s | env-steps per CPU-second |\n|---|---|---|---|")
    for (algo, n_envs), values in rates.items():
        wall, per_cpu = np.mean(values, axis=0)
        print(f"| {algo} | {n_envs} | {wall:.0f} | {per_cpu:.0f} |")


if __name__ == "__main__":
    main()
