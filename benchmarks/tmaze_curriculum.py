"""Continue training a T-Maze agent on a longer corridor (a curriculum step).

Loads a PPOElmur model trained on a short corridor (e.g. ``train.py --env tmaze-30``), trains it
further on ``tmaze-<length>`` with training chains long enough to hold a whole episode, and
reports the success rate at the new length and at far longer ones after every chunk.

    python benchmarks/tmaze_curriculum.py MODEL.zip --length 100 --timesteps 300000 --bptt-segments 11 --out curriculum.zip
"""

import argparse
import json
import sys
from pathlib import Path

import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eval_tmaze_lengths import evaluate  # noqa: E402
from elmur_sb3 import PPOElmur  # noqa: E402
from envs import make_vec_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--bptt-segments", type=int, default=11)
    parser.add_argument("--n-envs", type=int, default=32)
    parser.add_argument("--eval-lengths", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    th.set_num_threads(1)
    venv = make_vec_env(f"tmaze-{args.length}", n_envs=args.n_envs, seed=args.seed)
    model = PPOElmur.load(args.model, env=venv, bptt_segments=args.bptt_segments, seed=args.seed, device="cpu")
    log = []
    for chunk in range(args.timesteps // args.chunk):
        model.learn(args.chunk, reset_num_timesteps=False)
        rates = {L: evaluate(model, L, 32, seed=1000 + chunk)["success_rate"] for L in [args.length, *args.eval_lengths]}
        log.append({"timesteps": model.num_timesteps, "success": rates})
        print(json.dumps(log[-1]), flush=True)
        model.save(args.out)  # every chunk: an interrupted run keeps its latest model
        args.out.with_suffix(".json").write_text(json.dumps({"command": " ".join(sys.argv), "log": log}, indent=2))


if __name__ == "__main__":
    main()
