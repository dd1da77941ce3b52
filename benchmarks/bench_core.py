"""The ELMUR core's own cost at two commits, side by side: did a change make the model faster?

Each revision's ``elmur_sb3/`` is taken from git (``git archive``) into a temporary folder and
measured in its own subprocess, the revisions alternating round by round so that machine noise hits
both alike. Times are the process's CPU time (not wall time), one torch thread, so runs sharing the
cores inflate them less. Two costs, at the POPGym preset's sizes (the library defaults, 32 envs):

- **update**: forward and backward of one minibatch of chains (``--chains`` chains of
  ``--segments`` segments), as ``ElmurActorCriticPolicy.evaluate_chains`` runs one core;
- **step**: ``--steps`` steps of the step path for ``--envs`` envs (rollouts, ``predict``), no grad;
- **train** (with ``--train-steps N``): whole PPOElmur training, rollouts plus updates, on POPGym
  RepeatPrevious with the POPGym preset's PPO settings (32 envs, n_steps 128, batch 1024, 4 epochs,
  ``bptt_segments`` 2), reported as CPU milliseconds per 1,000 env steps (the envs and the training
  loop's callers are this checkout's for both revisions; only ``elmur_sb3`` differs).

    python benchmarks/bench_core.py HEAD~1 HEAD
    python benchmarks/bench_core.py 7addbbb HEAD --rounds 3 --train-steps 8192
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(chains: int, segments: int, envs: int, steps: int, repeats: int, train_steps: int) -> dict[str, float]:
    """Best-of-``repeats`` CPU milliseconds of the update and the step path (the ``elmur_sb3`` on sys.path)."""
    import torch as th

    from elmur_sb3.core import ElmurConfig, ElmurCore

    th.set_num_threads(1)
    th.manual_seed(0)
    config, input_dim = ElmurConfig(), 10
    core = ElmurCore(config, input_dim)
    features = th.randn(chains, segments, config.segment_len, input_dim)
    start = core.initial_segment_start(chains, "cpu")
    start_times = th.arange(segments).repeat(chains, 1) * config.segment_len
    step_features = th.randn(steps, envs, input_dim)

    # Each measured function returns how many of its units it ran: one call, or thousands of env steps.
    def update() -> float:
        segment_start, latents = start, []
        for k in range(segments):
            latent, segment_start, _ = core.forward_segment(features[:, k], segment_start, start_times[:, k])
            latents.append(latent)
        th.stack(latents).square().mean().backward()
        return 1.0

    def step() -> float:
        state = core.initial_state(envs, "cpu")
        with th.no_grad():
            for t in range(steps):
                _, state, _ = core.step(step_features[t], state)
        return 1.0

    best = {}
    fns = [("update_ms", update), ("step_ms", step)]
    if train_steps:
        sys.path.insert(1, str(ROOT))
        from elmur_sb3 import PPOElmur
        from envs import make_vec_env

        model = PPOElmur("MlpElmurPolicy", make_vec_env("popgym-RepeatPrevious", n_envs=32, seed=0), n_steps=128,
                         batch_size=1024, n_epochs=4, bptt_segments=2, seed=0, device="cpu")  # fmt: skip

        def train() -> float:
            before = model.num_timesteps
            model.learn(train_steps, reset_num_timesteps=False)  # whole rollouts: at least train_steps env steps
            return (model.num_timesteps - before) / 1000

        fns.append(("train_ms_per_1000_steps", train))
    for name, fn in fns:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            begin = time.process_time()
            units = fn()
            times.append((time.process_time() - begin) / units)
        best[name] = 1e3 * min(times)
    return best


def checkout(rev: str, into: Path) -> Path:
    """``elmur_sb3/`` as committed at ``rev``, extracted under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "elmur_sb3"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs=2, help="two git revisions: the baseline, then the candidate")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (one subprocess per revision each)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per round; a round reports its fastest")
    parser.add_argument("--chains", type=int, default=32, help="chains per update minibatch (32 x 2 x 16 = 1024 steps)")
    parser.add_argument("--segments", type=int, default=2, help="segments per chain (bptt_segments)")
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=0, help="also time PPOElmur training over this many env steps")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: measure the elmur_sb3 under this folder
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args(argv)
    sizes = dict(chains=args.chains, segments=args.segments, envs=args.envs, steps=args.steps, repeats=args.repeats,
                 train_steps=args.train_steps)  # fmt: skip
    if args.measure:
        sys.path.insert(0, str(args.measure))
        import elmur_sb3

        if args.measure.resolve() not in Path(elmur_sb3.__file__).resolve().parents:  # an installed copy won
            raise SystemExit(f"measured {elmur_sb3.__file__}, not the elmur_sb3 under {args.measure}")
        print(json.dumps(measure(**sizes)))
        return 0
    commits = {}
    for rev in args.revs:
        known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True)
        if known.returncode != 0:
            parser.error(f"unknown git revision {rev!r}: give a commit, branch or tag of this repository (e.g. HEAD~1 HEAD)")
        commits[rev] = known.stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {rev: checkout(rev, Path(tmp) / f"rev{i}") for i, rev in enumerate(args.revs)}
        samples: dict[str, list[dict[str, float]]] = {rev: [] for rev in args.revs}
        for _ in range(args.rounds):
            for rev, folder in folders.items():
                command = [sys.executable, __file__, *args.revs, "--measure", str(folder)]
                command += [f"--{key.replace('_', '-')}={value}" for key, value in sizes.items()]
                samples[rev].append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    base, candidate = args.revs
    report = {"revs": args.revs, "commits": commits, "sizes": sizes, "cpu_ms_best_of_rounds": {}, "speedup": {}}
    for key in samples[base][0]:
        best = {rev: min(sample[key] for sample in samples[rev]) for rev in args.revs}
        report["cpu_ms_best_of_rounds"][key] = best
        report["speedup"][key.split("_ms")[0]] = best[base] / best[candidate]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
