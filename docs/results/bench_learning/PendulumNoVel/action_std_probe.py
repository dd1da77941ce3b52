"""PPOElmur's and RecurrentPPO's gSDE action std on PendulumNoVel after one rollout and update (the preset, seed 0).

Also PPOElmur with ``output_scale=None`` (the heads read the core's output divided by sqrt(d_model)).

    python docs/results/bench_learning/PendulumNoVel/action_std_probe.py
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
import numpy as np, torch as th
th.set_num_threads(1)
from agents.build import build_model, make_train_env
from agents.experiment import resolve_experiment
from agents.hyperparams import parse_overrides
for algo, hp in [("ppo-elmur", []), ("ppo-elmur", ["policy_kwargs.output_scale=null"]), ("ppo-lstm", [])]:
    exp = resolve_experiment("PendulumNoVel-v1", algo, seed=0, overrides=parse_overrides(hp))
    venv = make_train_env(exp, None, 0)
    model = build_model(exp, venv, None, "cpu")
    model.learn(4096)  # one rollout + one update, to have real observations and states
    obs = model._last_obs
    pol = model.policy
    with th.no_grad():
        obs_t = th.as_tensor(obs).float()
        starts = th.ones(len(obs_t))
        if algo == "ppo-elmur":
            latent_pi, _, _, _ = pol._step_latents(obs_t, pol.initial_state(len(obs_t)), starts, critic=False)
            latent = pol.mlp_extractor.forward_actor(latent_pi)
        else:
            from sb3_contrib.common.recurrent.type_aliases import RNNStates
            feats = pol.extract_features(obs_t, pol.pi_features_extractor)
            h = pol.lstm_actor.hidden_size
            st = (th.zeros(1, len(obs_t), h), th.zeros(1, len(obs_t), h))
            latent_pi, _ = pol._process_sequence(feats, st, starts, pol.lstm_actor)
            latent = pol.mlp_extractor.forward_actor(latent_pi)
        dist = pol._get_action_dist_from_latent(latent)
        std = dist.distribution.stddev.mean().item()
    print(algo, *hp, "core output norm", latent_pi.norm(dim=-1).mean().item(), "policy latent norm", latent.norm(dim=-1).mean().item(), "action std", std)
