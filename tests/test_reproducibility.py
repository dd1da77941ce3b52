"""What docs/results' reproducibility statement rests on: one seed, one machine, one torch build gives
bit-identical training; another seed gives another run."""

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from elmur_sb3 import PPOElmur
from recall_env import RandomLengthEnv
from test_elmur import SMALL

th.set_num_threads(1)


def _train(seed: int) -> dict[str, th.Tensor]:
    venv = make_vec_env(RandomLengthEnv, n_envs=2, seed=seed)
    model = PPOElmur(
        "MlpElmurPolicy", venv, n_steps=24, batch_size=16, n_epochs=2, seed=seed, bptt_segments=2,
        policy_kwargs=dict(SMALL, memory_init_std=0.1),
    )  # fmt: skip
    model.learn(96)
    return {key: value.clone() for key, value in model.policy.state_dict().items()}


def test_same_seed_trains_bit_identically_and_another_seed_does_not():
    first, again, other = _train(3), _train(3), _train(4)
    assert first.keys() == again.keys() == other.keys()
    assert all(th.equal(first[key], again[key]) for key in first)
    assert not all(th.equal(first[key], other[key]) for key in first)
