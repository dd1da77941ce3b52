"""Cost of PPOElmur against sb3-contrib's RecurrentPPO, measured side by side in one process.

1. Per-step ``predict`` latency against episode time: one env plays a single episode of
   ``--latency-steps`` steps (a T-Maze corridor that long), every call timed; the report gives
   the median latency in windows around episode times 1e2, 1e4 and 1e5 (those within reach).
2. Training throughput (env steps per second, rollouts plus updates) on the same POPGym vec
   env with the same PPO settings, the variants interleaved round by round so that machine
   noise hits all alike: PPOElmur with the attention cache (the default) and without it, with a
   shared core (the old default), with compiled cores (their compilation in the warm-up, whose
   seconds are reported apart), and RecurrentPPO.
3. Arithmetic per env step (``--flops``): the matrix-product FLOPs of one rollout step and of one
   update's forward and backward, per env step, for PPOElmur (counted by torch's ``FlopCounterMode``)
   and RecurrentPPO (its heads counted alike; the LSTM cells, which the counter does not see, counted as
   ``2 * 4 * H * (in + H)`` per LSTM and step forward, twice that backward).

    python benchmarks/bench_speed.py --out docs/results/speed_cpu.json
    python benchmarks/bench_speed.py --flops --skip-latency --skip-throughput
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/bench_speed.py --skip-latency --skip-defaults --variants "ppo-elmur compile_cores"
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sb3_contrib import RecurrentPPO  # noqa: E402

from elmur_sb3 import PPOElmur  # noqa: E402
from envs import make_vec_env  # noqa: E402

ELMUR_KWARGS = dict(d_model=64, n_layers=2, n_heads=4, segment_len=16, memory_slots=8, lru_blend=0.8)
VARIANTS = {  # the library's defaults first; what each other row changes
    "ppo-elmur": {},
    "ppo-elmur cache_len=0": dict(cache_len=0),
    "ppo-elmur shared_core": dict(shared_core=True),
    # cheaper critics (the learning efficiency issue): the critic's own core smaller than the actor's
    "ppo-elmur critic 1 layer": dict(critic_core_kwargs=dict(n_layers=1)),
    "ppo-elmur critic d32 1 layer": dict(critic_core_kwargs=dict(d_model=32, n_layers=1)),
    "ppo-elmur d_ff=2*d_model": dict(d_ff=128),
    "ppo-elmur d_ff=2*d_model, critic d32 1 layer": dict(d_ff=128, critic_core_kwargs=dict(d_model=32, n_layers=1, d_ff=64)),
    # the stability issue's block forms: pre-norm, and pre-norm with GTrXL's gated residuals
    "ppo-elmur norm_first": dict(norm_first=True),
    "ppo-elmur gtrxl": dict(norm_first=True, residual_gate=True),
    # torch.compile of both cores; its compilation falls in the warm-up, reported apart
    "ppo-elmur compile_cores": dict(compile_cores=True),
    "ppo-lstm": None,
}


def build(variant: str, venv, device: str, lstm_hidden: int, batch_size: int, n_epochs: int, n_steps: int):
    common = dict(n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, device=device, seed=0, verbose=0)
    if variant.startswith("ppo-elmur"):
        policy_kwargs = dict(ELMUR_KWARGS, **VARIANTS[variant])
        return PPOElmur("MlpElmurPolicy", venv, bptt_segments=2, policy_kwargs=policy_kwargs, **common)
    return RecurrentPPO("MlpLstmPolicy", venv, policy_kwargs=dict(lstm_hidden_size=lstm_hidden), **common)


def latency(algo: str, device: str, steps: int, lstm_hidden: int) -> dict[str, float]:
    venv = make_vec_env(f"tmaze-{steps}", n_envs=1, seed=0)
    model = build(algo, venv, device, lstm_hidden, 64, 1, 64)
    obs = venv.reset()
    state, start = None, np.ones(1, dtype=bool)
    times = np.zeros(steps)
    for t in range(steps):
        begin = time.perf_counter()
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        if device == "cuda":
            th.cuda.synchronize()
        times[t] = time.perf_counter() - begin
        obs, _, done, _ = venv.step(np.ones(1, dtype=np.int64))  # walk the corridor
        start = done
    windows = {}
    for point in (100, 10_000, 100_000):
        if point <= steps:
            lo = max(0, point - 200)
            windows[f"t={point}"] = float(np.median(times[lo:point]) * 1e3)
    return windows


def throughput(algos: list[str], device: str, env: str, n_envs: int, n_steps: int, batch_size: int,
               n_epochs: int, rounds: int, lstm_hidden: int) -> dict[str, float]:  # fmt: skip
    models, warm_up = {}, {}
    for algo in algos:
        models[algo] = build(algo, make_vec_env(env, n_envs=n_envs, seed=0), device, lstm_hidden, batch_size, n_epochs, n_steps)
        begin = time.perf_counter()
        models[algo].learn(n_envs * n_steps)  # warm-up: first rollout and update (and any compilation)
        warm_up[f"{algo} warm-up s"] = time.perf_counter() - begin
    seconds = {algo: 0.0 for algo in algos}
    cpu_seconds = {algo: 0.0 for algo in algos}
    per_round = n_envs * n_steps
    for _ in range(rounds):
        for algo, model in models.items():
            begin, cpu_begin = time.perf_counter(), time.process_time()
            model.learn(per_round, reset_num_timesteps=False)
            seconds[algo] += time.perf_counter() - begin
            cpu_seconds[algo] += time.process_time() - cpu_begin
    # CPU time as well as wall time: on a shared machine the process's own CPU time is far less
    # disturbed by other jobs than the wall clock, so its ratios are the ones to read there.
    return {**{algo: rounds * per_round / seconds[algo] for algo in algos},
            **{f"{algo} per cpu-s": rounds * per_round / cpu_seconds[algo] for algo in algos}, **warm_up}  # fmt: skip


def flops_per_env_step(algo: str, env: str, lstm_hidden: int, batch_size: int = 1024, n_envs: int = 32) -> dict[str, float]:
    """MFLOP per env step of a rollout step and of an update's forward + backward (module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(algo, make_vec_env(env, n_envs=n_envs, seed=0), "cpu", lstm_hidden, batch_size, 1, 64)
    model.learn(n_envs * 64)  # one rollout fills the buffer the update reads
    policy, obs = model.policy, th.as_tensor(model._last_obs)
    starts, states = th.zeros(n_envs, dtype=th.bool), policy.initial_state(n_envs) if algo.startswith("ppo-elmur") else model._last_lstm_states
    segment_len = ELMUR_KWARGS["segment_len"]  # a whole segment: its last step writes the memory
    with FlopCounterMode(display=False) as rollout, th.no_grad():
        for _ in range(segment_len):
            *_, states = policy(obs, states, starts)
    batch = next(model.rollout_buffer.get(batch_size))
    with FlopCounterMode(display=False) as update:
        if algo.startswith("ppo-elmur"):
            values, log_prob, _, _ = policy.evaluate_chains(batch.observations, batch.actions, batch.start_times, batch.start_pi, batch.start_vf)
            steps = batch.loss_mask.numel()  # chains are padded to whole segments: count every computed step
        else:
            values, log_prob, _ = policy.evaluate_actions(batch.observations, batch.actions, batch.lstm_states, batch.episode_starts)
            steps = len(batch.actions)
        (values.sum() + log_prob.sum()).backward()
    step_flops, update_flops = rollout.get_total_flops() / (n_envs * segment_len), update.get_total_flops() / steps
    if not algo.startswith("ppo-elmur"):  # the counter does not see aten::lstm: two LSTMs (actor, critic), counted by hand
        lstm = 2 * 2 * 4 * lstm_hidden * (policy.features_dim + lstm_hidden)
        step_flops, update_flops = step_flops + lstm, update_flops + 3 * lstm
    return {"rollout_step_mflop": step_flops / 1e6, "update_fwd_bwd_mflop": update_flops / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-steps", type=int, default=100_000)
    parser.add_argument("--env", default="popgym-RepeatPrevious")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lstm-hidden", type=int, default=128, help="RecurrentPPO width (its default is 256)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-defaults", action="store_true", help="skip the RecurrentPPO-defaults setting")
    parser.add_argument("--flops", action="store_true", help="also count the arithmetic per env step")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                        help=f"throughput rows (default: all of {list(VARIANTS)}); ppo-elmur and ppo-lstm are always included")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    algos = ["ppo-elmur", *(v for v in args.variants if v not in ("ppo-elmur", "ppo-lstm")), "ppo-lstm"]
    machine = f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s), device {args.device}"
    if args.device == "cuda":
        machine += f" ({th.cuda.get_device_name()})"
    report: dict = {"machine": machine, "command": " ".join(sys.argv), "elmur": ELMUR_KWARGS, "lstm_hidden": args.lstm_hidden}

    settings = {} if args.skip_throughput else {"efficient (32 envs, n_steps 128, batch 1024, 4 epochs)": (32, 128, 1024, 4)}
    if not (args.skip_defaults or args.skip_throughput):
        settings["RecurrentPPO defaults (8 envs, n_steps 128, batch 128, 10 epochs)"] = (8, 128, 128, 10)
    report["train_env_steps_per_s"] = {}
    for name, (n_envs, n_steps, batch, epochs) in settings.items():
        fps = throughput(algos, args.device, args.env, n_envs, n_steps, batch, epochs, args.rounds, args.lstm_hidden)
        for clock in ("", " per cpu-s"):
            fps[f"ratio elmur/lstm{clock}"] = fps[f"ppo-elmur{clock}"] / fps[f"ppo-lstm{clock}"]
            for variant in algos[1:-1]:
                fps[f"ratio {variant}/lstm{clock}"] = fps[f"{variant}{clock}"] / fps[f"ppo-lstm{clock}"]
            if "ppo-elmur cache_len=0" in algos:
                fps[f"ratio cache/no cache{clock}"] = fps[f"ppo-elmur{clock}"] / fps[f"ppo-elmur cache_len=0{clock}"]
        report["train_env_steps_per_s"][name] = fps
        print(name, json.dumps(fps), flush=True)
    if args.flops:
        report["mflop_per_env_step"] = {algo: flops_per_env_step(algo, args.env, args.lstm_hidden) for algo in algos}
        print("MFLOP per env step", json.dumps(report["mflop_per_env_step"]), flush=True)
    if not args.skip_latency:
        report["predict_latency_ms"] = {}
        for algo in ("ppo-elmur", "ppo-elmur cache_len=0", "ppo-lstm"):
            report["predict_latency_ms"][algo] = lat = latency(algo, args.device, args.latency_steps, args.lstm_hidden)
            values = list(lat.values())
            lat["largest/smallest"] = max(values) / min(values)
            print(algo, "latency ms", json.dumps(lat), flush=True)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
