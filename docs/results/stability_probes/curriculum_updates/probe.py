"""The T-Maze curriculum step's first updates, one at a time: after each PPO update, the deterministic
success at length 100 (32 episodes), the junction doubt, and the update's approx_kl and learning rate.
Starts from the tmaze-30 model of the T-Maze pipeline at HEAD (with its Adam state), as
``reproduce_tmaze.py``'s curriculum step does, and trains with the same preset and seed.

    python docs/results/stability_probes/curriculum_updates/probe.py ALGO SEED VARIANT N_UPDATES [--hp items]

VARIANT: ``loaded`` (as the pipeline), ``beta2`` (Adam's beta2 0.99 after loading), ``fresh`` (new Adam
moments), ``warmup`` (learning rate ramped over the first 5% of the budget), ``eps`` (Adam eps 1e-3); extra ``key=value`` items
are ``--hp`` overrides, e.g. ``learning_rate=lin_1e-4``.
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from agents.experiment import resolve_experiment
from agents.build import make_train_env, build_model, load_trained_agent
from benchmarks.eval_tmaze_lengths import evaluate  # noqa: E402
from agents.hyperparams import parse_overrides  # noqa: E402

algo, seed, variant, n_updates = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
start = ROOT / f"docs/results/tmaze_head/tmaze-30/runs/tmaze-30__{algo}__s{seed}/final_model.zip"
exp = resolve_experiment("tmaze-100", algo, seed=seed, eval_env="tmaze-1000", overrides=parse_overrides(sys.argv[5:]))
env = make_train_env(exp, None, seed)
exp = exp.with_policy(env.observation_space)
model = build_model(exp, env, None, "cpu")
load_trained_agent(model, start)
if "fresh" in variant:
    opt = model.policy.optimizer
    model.policy.optimizer = type(opt)(model.policy.parameters(), **model.policy.optimizer_kwargs, lr=opt.param_groups[0]["lr"])
if "warmup" in variant:
    base, w = model.lr_schedule, 0.05
    model.lr_schedule = lambda p: base(p) * min(1.0, (1.0 - p) / w)
if "beta2" in variant:
    for g in model.policy.optimizer.param_groups: g["betas"] = (0.9, 0.99)
if "eps" in variant:
    for g in model.policy.optimizer.param_groups: g["eps"] = 1e-3
tmp = tempfile.mkdtemp()
model.set_logger(configure(tmp, ["csv"]))
rows = []
class Probe(BaseCallback):
    def __init__(self): super().__init__(); self.k = 0; self.stop = False
    def _on_rollout_start(self):
        r = evaluate(self.model, 100, 32, 1000 + self.k)
        nv = self.model.logger.name_to_value
        rows.append({"update": self.k, "success100": r["success_rate"], "doubt": r["junction_doubt"],
                     "approx_kl": nv.get("train/approx_kl"), "clip": nv.get("train/clip_fraction"), "lr": nv.get("train/learning_rate")})
        self.k += 1; self.stop = self.k > n_updates
    def _on_step(self): return not self.stop
model.learn(300000, callback=Probe())
print(algo, seed, variant, sys.argv[5:], json.dumps(rows))
