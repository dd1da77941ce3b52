"""Would running the actor's and the critic's ELMUR cores as one batched computation pay?

With the separate critic core (the default) every rollout step and every update runs two cores of the
same shape one after the other. ``torch.func.vmap`` over the two cores' stacked parameters runs them as
one computation (batched matmuls), which halves the number of kernel launches. This measures a
PPO update's forward and backward over chains of segments both ways, side by side in one process,
and checks that both compute the same function.

    python benchmarks/bench_grouped_cores.py --chains 4 32 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch as th
from torch.func import vmap
from torch.nn.utils.stateless import _reparametrize_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elmur_sb3.core import ElmurConfig, ElmurCore, SegmentStart  # noqa: E402


def run_chains(core: ElmurCore, features: th.Tensor, start: SegmentStart, start_times: th.Tensor) -> th.Tensor:
    """Latents of chains ``features (C, K, L, in)``, as ``ElmurActorCriticPolicy._run_chains`` computes them."""
    latents = []
    for k in range(features.shape[1]):
        latent, start, _ = core.forward_segment(features[:, k], start, start_times[:, k])
        latents.append(latent)
    return th.stack(latents, 1)


def measure(chains: int, rounds: int, iterations: int, segments: int = 2, input_dim: int = 20) -> dict[str, float]:
    config = ElmurConfig()
    actor, critic = ElmurCore(config, input_dim), ElmurCore(config, input_dim)
    features = th.randn(chains, segments, config.segment_len, input_dim)
    start_times = th.randint(0, 5, (chains, 1)) * config.segment_len + th.arange(segments) * config.segment_len
    start = actor.initial_segment_start(chains, "cpu")
    names = [name for name, _ in actor.named_parameters()]
    actor_params, critic_params = dict(actor.named_parameters()), dict(critic.named_parameters())

    def sequential() -> tuple[th.Tensor, th.Tensor]:
        return run_chains(actor, features, start, start_times), run_chains(critic, features, start, start_times)

    def grouped() -> tuple[th.Tensor, th.Tensor]:
        stacked = {name: th.stack([actor_params[name], critic_params[name]]) for name in names}

        def one(params: dict[str, th.Tensor]) -> th.Tensor:
            with _reparametrize_module(actor, params):
                return run_chains(actor, features, start, start_times)

        out = vmap(one)(stacked)
        return out[0], out[1]

    gap = max((a - b).abs().max().item() for a, b in zip(sequential(), grouped()))
    times: dict[str, list[float]] = {"sequential": [], "grouped": []}
    for _ in range(rounds):
        for name, fn in (("sequential", sequential), ("grouped", grouped)):
            begin = time.perf_counter()
            for _ in range(iterations):
                pi, vf = fn()
                (pi.square().mean() + vf.square().mean()).backward()
            times[name].append((time.perf_counter() - begin) / iterations * 1000)
    best = {name: min(values) for name, values in times.items()}
    return {"chains": chains, "max_abs_difference": gap, "sequential_ms": best["sequential"], "grouped_ms": best["grouped"],
            "speedup": best["sequential"] / best["grouped"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, nargs="+", default=[4, 32], help="chains per minibatch (batch 128 -> 4, 1024 -> 32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(1)
    th.manual_seed(0)
    print("| chains x 2 segments x 16 steps | sequential, ms per forward+backward | vmap-grouped | speed-up | max difference |")
    print("|---|---|---|---|---|")
    for chains in args.chains:
        r = measure(chains, args.rounds, args.iterations)
        print(f"| {chains} | {r['sequential_ms']:.1f} | {r['grouped_ms']:.1f} | {r['speedup']:.2f}x | {r['max_abs_difference']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
