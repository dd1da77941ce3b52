"""A/B of SB3's default Adam against torch's fused CPU Adam, same run settings, interleaved rounds.

    python docs/results/speed_probes/fused_adam_ab.py popgym-RepeatPrevious ppo-elmur 16384 2
"""
import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import torch as th
th.set_num_threads(1)
from agents.build import build_model, make_train_env
from agents.experiment import resolve_experiment
from agents.hyperparams import parse_overrides
env, algo, steps, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
res = {}
for r in range(rounds):
    for name, hp in [("default", []), ("fused", ["policy_kwargs.optimizer_kwargs.fused=true"])]:
        exp = resolve_experiment(env, algo, seed=0, overrides=parse_overrides(hp))
        venv = make_train_env(exp, None, 0)
        model = build_model(exp, venv, None, "cpu")
        model.learn(steps // 4)  # warm-up rollout
        t0 = time.perf_counter(); model.learn(steps, reset_num_timesteps=False)
        dt = time.perf_counter() - t0
        res.setdefault(name, []).append(steps / dt)
        print(r, name, round(steps / dt, 1), flush=True)
for k, v in res.items(): print(k, [round(x) for x in v], "ratio to default", round(sum(v) / sum(res["default"]), 3))
