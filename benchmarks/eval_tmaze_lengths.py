"""Evaluate one saved T-Maze agent on corridors far longer than its training ones.

All episodes of one length run side by side in the native numpy T-Maze VecEnv (one batched
``predict`` per step), deterministic actions; success = the right goal (``is_success``). Success is
also reported per cue: a policy that has lost the cue turns the same way whatever it saw, and scores
1.0 on one cue and 0.0 on the other (about 0.5 overall). ``junction_doubt`` is the mean probability
the policy gives to every action but its choice at the junction: a model that has lost the cue and
still chooses with a doubt near 0 is a *confident coin flip*, from which PPO hardly recovers (the
policy gradient at the junction, and through it the gradient that could relearn the carry, scales
with that doubt).

    python benchmarks/eval_tmaze_lengths.py MODEL.zip --lengths 100 1000 10000 100000 --episodes 32 --out result.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.registry import ALGOS  # noqa: E402
from envs import make_vec_env  # noqa: E402


def action_probabilities(model, obs: np.ndarray, state, starts: np.ndarray) -> np.ndarray:
    """The policy's action probabilities for ``obs`` from the recurrent ``state`` that ``predict`` took
    (PPOElmur's states, or RecurrentPPO's ``(hidden, cell)`` arrays)."""
    obs_tensor, _ = model.policy.obs_to_tensor(obs)
    starts_tensor = th.as_tensor(starts, device=model.device)
    with th.no_grad():
        if isinstance(state, tuple) and isinstance(state[0], np.ndarray):  # RecurrentPPO: actor LSTM's (h, c)
            lstm_state = tuple(th.as_tensor(x, device=model.device) for x in state)
            distribution, _ = model.policy.get_distribution(obs_tensor, lstm_state, starts_tensor.float())
        else:
            state = state if state is not None else model.policy.initial_state(len(obs))
            distribution, _ = model.policy.get_distribution(obs_tensor, state, starts_tensor)
    return distribution.distribution.probs.cpu().numpy()


def evaluate(model, length: int, episodes: int, seed: int) -> dict:
    venv = make_vec_env(f"tmaze-{length}", n_envs=episodes, seed=seed)
    obs = venv.reset()
    cue_up = obs[:, 0] > 0.5  # only the first observation carries the cue (envs/tmaze.py)
    state, starts = None, np.ones(episodes, dtype=bool)
    finished = np.zeros(episodes, dtype=bool)
    success = np.zeros(episodes, dtype=bool)
    doubt = np.full(episodes, np.nan)
    begin = time.perf_counter()
    while not finished.all():
        at_junction = (obs[:, 2] > 0.5) & np.isnan(doubt) & ~finished
        if at_junction.any() and hasattr(model, "policy"):  # the first decision at each env's first junction
            doubt[at_junction] = 1.0 - action_probabilities(model, obs, state, starts)[at_junction].max(-1)
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, infos = venv.step(actions)
        for i in np.flatnonzero(starts & ~finished):  # each env's first episode only
            finished[i], success[i] = True, bool(infos[i].get("is_success", False))
    def rate(mask: np.ndarray) -> float | None:
        return float(success[mask].mean()) if mask.any() else None

    return {"length": length, "episodes": episodes, "success_rate": float(success.mean()),
            "success_cue_up": rate(cue_up), "success_cue_down": rate(~cue_up),
            "junction_doubt": None if np.isnan(doubt).all() else float(np.nanmean(doubt)),
            "seconds": round(time.perf_counter() - begin, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--algo", default="ppo-elmur", choices=sorted(ALGOS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    th.set_num_threads(1)
    model = ALGOS[args.algo].load_class().load(args.model, device="cpu")
    results = []
    for length in args.lengths:
        results.append(evaluate(model, length, args.episodes, args.seed))
        print(json.dumps(results[-1]), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"model": str(args.model), "command": " ".join(sys.argv), "results": results}, indent=2))


if __name__ == "__main__":
    main()
