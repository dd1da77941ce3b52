"""How much of the T-Maze cue each layer's memory still holds, segment after segment.

Two deterministic episodes per model on one long corridor, one per cue. Every corridor step is the
same in both, so their memories differ only through the cue; the figure per layer and segment end k is
``||m_up - m_down|| / ||m_up||`` over the actor core's slots. A model can only turn right at the
junction of a corridor of ``k`` segments if the figure is clearly above 0 at ``k``.

    python benchmarks/cue_retention.py runs/<run>/final_model.zip --length 1000 --segments 1 2 5 10 20 50 99
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elmur_sb3 import PPOElmur  # noqa: E402
from envs import make_vec_env  # noqa: E402


def cue_separation(model: PPOElmur, length: int, seed: int = 5, n_envs: int = 16) -> dict[int, list[float]]:
    """``{k: [separation per layer]}`` at the end of every segment ``k`` of a ``tmaze-<length>`` episode.

    :param seed: seeds the corridor envs; ``n_envs`` of them are run so that both cues occur
    """
    segment_len = model.policy.elmur_config.segment_len
    venv = make_vec_env(f"tmaze-{length}", n_envs=n_envs, seed=seed)
    obs = venv.reset()
    cue_up = obs[:, 0] > 0.5  # only the first observation carries the cue (envs/tmaze.py)
    if cue_up.all() or not cue_up.any():
        raise ValueError(f"seed {seed} drew one cue for all {n_envs} envs; pick another seed")
    up, down = int(np.flatnonzero(cue_up)[0]), int(np.flatnonzero(~cue_up)[0])
    state, starts = None, np.ones(n_envs, dtype=bool)
    separation: dict[int, list[float]] = {}
    for t in range(1, length + 1):
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = venv.step(actions)
        if t % segment_len == 0:
            vectors = state.pi.start.memory.vectors  # (n_layers, B, M, d): written at the segment's end
            separation[t // segment_len] = [
                ((layer[up] - layer[down]).norm() / layer[up].norm().clamp_min(1e-12)).item() for layer in vectors
            ]
    venv.close()
    return separation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--length", type=int, default=1000, help="corridor length (must exceed the segments asked for)")
    parser.add_argument("--segments", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 99])
    args = parser.parse_args()
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)} (expected PPOElmur .zip files saved by train.py)")
    if max(args.segments) > args.length:
        parser.error(f"--segments up to {max(args.segments)} need a corridor of more steps than --length {args.length}")
    th.set_num_threads(1)
    print("| model | " + " | ".join(f"k={k}" for k in args.segments) + " |")
    print("|---|" + "---|" * len(args.segments))
    for path in args.models:
        separation = cue_separation(PPOElmur.load(path, device="cpu"), args.length)
        cells = ["/".join(f"{x:.2g}" for x in separation[k]) if k in separation else "-" for k in args.segments]
        print(f"| {path} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
