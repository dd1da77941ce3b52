"""gSDE action std per state of the published PendulumNoVel final models (every variant and seed here).

gSDE's std for a state is |latent| x exp(log_std): where the ReLU policy latent of a state is near zero,
so is its noise, and an action sampled before an update can get a log-probability of -1e5 after it (the
approx_kl spikes of PPOElmur's runs). This counts how many visited states have such a std.

    python docs/results/bench_learning/PendulumNoVel/gsde_std_probe.py
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
import torch as th  # noqa: E402

th.set_num_threads(1)
from agents.build import make_eval_env  # noqa: E402
from agents.experiment import resolve_experiment  # noqa: E402
from agents.hyperparams import parse_overrides  # noqa: E402

HERE = Path(__file__).resolve().parent
# (variant folder, algorithm, its --hp items)
VARIANTS = [("ppo-elmur", "ppo-elmur", []), ("ppo-lstm", "ppo-lstm", []),
            ("ppo-elmur-outscale", "ppo-elmur", ["policy_kwargs.output_scale=null"]),
            ("ppo-elmur-targetkl", "ppo-elmur", ["target_kl=0.02"])]  # fmt: skip
for variant, algo, hp in VARIANTS:
    for run in sorted((HERE / variant / "runs").glob("*")):
        seed = int(run.name.rsplit("__s", 1)[1])
        exp = resolve_experiment("PendulumNoVel-v1", algo, seed=seed, overrides=parse_overrides(hp))
        venv = make_eval_env(exp, 1000 + seed, 4, run / "vecnormalize.pkl")
        model = exp.spec.load_class().load(str(run / "final_model.zip"), device="cpu")
        policy = model.policy
        obs = venv.reset()
        n = venv.num_envs
        starts = th.ones(n)
        if algo == "ppo-elmur":
            state = policy.initial_state(n)
        else:
            from sb3_contrib.common.recurrent.type_aliases import RNNStates

            h = policy.lstm_actor.hidden_size
            zeros = (th.zeros(1, n, h), th.zeros(1, n, h))
            state = RNNStates(zeros, zeros)
        stds = []
        with th.no_grad():
            for _ in range(200):
                obs_t = th.as_tensor(obs).float()
                if algo == "ppo-elmur":
                    dist, state = policy.get_distribution(obs_t, state, starts)
                else:
                    dist, pi_state = policy.get_distribution(obs_t, state.pi, starts)
                    state = RNNStates(pi_state, state.vf)
                stds.append(dist.distribution.stddev.reshape(n).numpy())
                actions = dist.get_actions(deterministic=False).numpy()
                obs, _, dones, _ = venv.step(actions.reshape(n, 1))
                starts = th.as_tensor(dones).float()
        stds = np.concatenate(stds)
        print(f"{variant} s{seed}: gSDE std per state: median {np.median(stds):.3f}, 1st percentile "
              f"{np.percentile(stds, 1):.4f}, min {stds.min():.2e}, share below 0.01: {np.mean(stds < 0.01):.3f}")
