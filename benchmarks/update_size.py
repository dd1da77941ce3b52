"""How far does one PPO update move each policy? A seconds-long diagnostic of learning speed and stability.

For each variant, train a few rollouts from scratch with the env's preset and report, averaged over
updates and seeds: ``approx_kl`` and ``clip_fraction`` of the updates (SB3's own figures) and the mean
L2 norm of the features the actor head reads (the core's output tokens, the LSTM's hidden state). Same
preset, learning rate and data size for every variant, so the figures compare how strongly one
update at that learning rate moves each model.

    python benchmarks/update_size.py --env CartPoleNoVel-v1 --updates 5 --seeds 2 \\
        ppo-elmur ppo-lstm "zero-bias=ppo-elmur:policy_kwargs.alibi_init=false" --hp learning_rate=1e-3 clip_range=0.2

A variant is ``<algo>`` or ``<name>=<algo>:<hp>,<hp>`` (``--hp`` items for that variant only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch as th

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.build import build_model, make_train_env  # noqa: E402
from agents.experiment import resolve_experiment  # noqa: E402
from agents.hyperparams import parse_overrides  # noqa: E402


HEADS = ("mlp_extractor", "action_net", "value_net", "log_std")


def measure(env: str, algo: str, hp: list[str], seed: int, updates: int, train: str = "all") -> dict[str, float]:
    """approx_kl, clip_fraction (means over ``updates``) and the actor features' mean norm of one seed.

    :param train: "all", or "heads" / "core" to freeze the other part (which part moves the policy)
    """
    exp = resolve_experiment(env, algo, seed=seed, overrides=parse_overrides(hp))
    venv = make_train_env(exp, None, seed)
    model = build_model(exp, venv, None, "cpu")
    if train != "all":
        for name, parameter in model.policy.named_parameters():
            parameter.requires_grad_(name.startswith(HEADS) == (train == "heads"))
    norms: list[float] = []
    extractor = model.policy.mlp_extractor
    forward_actor = extractor.forward_actor

    def recording_forward_actor(features: th.Tensor) -> th.Tensor:
        norms.append(features.detach().norm(dim=-1).mean().item())
        return forward_actor(features)

    extractor.forward_actor = recording_forward_actor
    rollout = model.n_steps * model.n_envs
    kl, clip = [], []
    for update in range(updates):
        # learn() dumps the previous update's figures before it trains, so they stay readable afterwards
        model.learn(rollout, reset_num_timesteps=update == 0)
        kl.append(model.logger.name_to_value["train/approx_kl"])
        clip.append(model.logger.name_to_value["train/clip_fraction"])
    venv.close()
    return {"approx_kl": float(np.mean(kl)), "clip_fraction": float(np.mean(clip)), "feature_norm": float(np.mean(norms))}


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    name, _, spec = text.partition("=")
    if not spec:
        return name, name, []
    algo, _, hp = spec.partition(":")
    return name, algo, [item for item in hp.split(",") if item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="<algo> or <name>=<algo>:<hp>,<hp>")
    parser.add_argument("--env", default="CartPoleNoVel-v1")
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--train", choices=["all", "heads", "core"], default="all",
                        help="train only the heads (MLP, action and value nets) or only the core/LSTM")
    parser.add_argument("--hp", nargs="*", default=[], help="--hp items for every variant (a constant learning_rate, say)")
    args = parser.parse_args()
    th.set_num_threads(1)
    print(f"{args.env}, {args.updates} updates x {args.seeds} seeds, training {args.train}, --hp {' '.join(args.hp) or '(preset)'}")
    print("| variant | approx_kl | clip_fraction | actor feature norm |\n|---|---|---|---|")
    for text in args.variants:
        name, algo, hp = parse_variant(text)
        runs = [measure(args.env, algo, [*args.hp, *hp], seed, args.updates, args.train) for seed in range(args.seeds)]
        mean = {key: np.mean([run[key] for run in runs]) for key in runs[0]}
        print(f"| {name} | {mean['approx_kl']:.4f} | {mean['clip_fraction']:.3f} | {mean['feature_norm']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
