"""Passive T-Maze: rewards, the gym env against the native VecEnv, and a million-cell corridor."""

from __future__ import annotations

import os
import time

import gymnasium as gym
from gymnasium.utils.env_checker import check_env as gym_check_env
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from envs import env_family, make_vec_env, resolve_env_name, wrap_env
from envs.tmaze import DOWN, LEFT, RIGHT, UP, TMazeEnv, TMazeVecEnv, optimal_action


def run_episode(env: TMazeEnv, actions: list[int], goal_up: bool) -> tuple[list[float], bool, bool, dict]:
    """Play ``actions`` from a reset with the given cue; return rewards and how it ended."""
    obs, _ = env.reset(options={"goal_up": goal_up})
    assert obs.tolist() == [float(goal_up), float(not goal_up), 0.0]
    rewards = []
    terminated = truncated = False
    info: dict = {}
    for k, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert obs[0] == obs[1] == 0.0, "the cue is visible only at step 0"
        if terminated or truncated:
            assert k == len(actions) - 1, "episode ended early"
    return rewards, terminated, truncated, info


@pytest.mark.parametrize("length", [1, 2, 7, 30])
@pytest.mark.parametrize("goal_up", [True, False])
def test_optimal_policy_scores_one(length: int, goal_up: bool) -> None:
    env = TMazeEnv(length)
    rewards, terminated, truncated, info = run_episode(env, [RIGHT] * length + [UP if goal_up else DOWN], goal_up)
    assert rewards[:-1] == [0.0] * length
    assert sum(rewards) == 1.0
    assert terminated and not truncated
    assert info["is_success"] is True


@pytest.mark.parametrize("length", [1, 5, 30])
def test_wrong_turn_scores_zero(length: int) -> None:
    env = TMazeEnv(length)
    rewards, terminated, truncated, info = run_episode(env, [RIGHT] * length + [DOWN], goal_up=True)
    assert sum(rewards) == 0.0
    assert terminated and not truncated
    assert info["is_success"] is False


@pytest.mark.parametrize("length,k", [(10, 1), (10, 3), (30, 7), (4, 4)])
def test_lagging_is_penalised(length: int, k: int) -> None:
    # Walk right, then stand still (up/down in the corridor hit the walls) for the
    # last k corridor steps: k steps behind schedule, then the horizon cuts the
    # episode before the junction choice.
    env = TMazeEnv(length)
    actions = [RIGHT] * (length - k) + [UP, DOWN] * k
    actions = actions[: length] + [UP]
    rewards, terminated, truncated, info = run_episode(env, actions, goal_up=True)
    assert sum(rewards) == pytest.approx(-k / length, abs=1e-12)
    assert all(r == pytest.approx(-1 / length) for r in rewards[length - k : length])
    assert rewards[-1] == 0.0
    # The horizon is part of the task: a cut-off is a termination, so no learner
    # bootstraps a value past it (see the module docstring of envs.tmaze).
    assert terminated and not truncated
    assert info["is_success"] is False


def test_lagging_counts_every_step_behind_schedule() -> None:
    # As in Ni et al. 2023: the penalty applies whenever x_t < t, so one idle step
    # at the start costs -1/length at every later corridor step (total -1).
    length = 6
    env = TMazeEnv(length)
    rewards, terminated, truncated, _ = run_episode(env, [LEFT] + [RIGHT] * length, goal_up=False)
    assert sum(rewards) == pytest.approx(-1.0)
    assert terminated and not truncated


def test_gym_registration_and_checkers() -> None:
    env = gym.make("TMaze-v0", length=7)
    assert env.unwrapped.length == 7
    check_env(TMazeEnv(5))
    gym_check_env(TMazeEnv(5), skip_render_check=True)
    assert resolve_env_name("tmaze-30") == "tmaze-30"
    assert resolve_env_name("TMaze-030") == "tmaze-30"
    assert env_family("tmaze-30") == "tmaze"
    assert resolve_env_name("TMaze-v0") == "TMaze-v0"


def _random_actions(rng: np.random.Generator, n_envs: int) -> np.ndarray:
    # Mostly forward so that junction choices (both right and wrong) happen.
    return rng.choice(4, size=n_envs, p=[0.7, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("prev_action", [False, True])
@pytest.mark.parametrize("length,seed", [(1, 0), (2, 3), (5, 11), (13, 42)])
def test_vec_env_matches_gym_env(length: int, seed: int, prev_action: bool) -> None:
    """The fast VecEnv, its in-place previous action/reward included, equals TMazeEnv under wrap_env (PrevActionReward)."""
    n_envs = 6
    ref = DummyVecEnv([lambda: wrap_env(TMazeEnv(length), prev_action=prev_action) for _ in range(n_envs)])
    vec = TMazeVecEnv(length, n_envs=n_envs, prev_action=prev_action)
    assert vec.observation_space == ref.observation_space
    assert vec.action_space == ref.action_space
    ref.seed(seed)
    vec.seed(seed)
    np.testing.assert_array_equal(vec.reset(), ref.reset())

    rng = np.random.default_rng(seed)
    n_done = n_success = 0
    for _ in range(6 * (length + 1)):
        actions = _random_actions(rng, n_envs)
        obs_r, rew_r, done_r, info_r = ref.step(actions)
        obs_v, rew_v, done_v, info_v = vec.step(actions)
        assert obs_v.dtype == np.float32 and rew_v.dtype == np.float32
        np.testing.assert_array_equal(obs_v, obs_r)
        np.testing.assert_array_equal(rew_v, rew_r)
        np.testing.assert_array_equal(done_v, done_r)
        for iv, ir in zip(info_v, info_r):
            assert set(iv) == set(ir)
            for key in iv:
                np.testing.assert_array_equal(iv[key], ir[key])
        n_done += int(done_v.sum())
        n_success += sum(bool(i.get("is_success")) for i in info_v)
    assert n_done == 6 * n_envs
    if length <= 2:
        assert n_success > 0


def test_vec_env_seeding_is_reproducible() -> None:
    a, b = TMazeVecEnv(3, n_envs=8), TMazeVecEnv(3, n_envs=8)
    a.seed(5)
    b.seed(5)
    np.testing.assert_array_equal(a.reset(), b.reset())
    c = TMazeVecEnv(3, n_envs=8)
    c.seed(6)
    cues = [c.reset()[:, 0] for _ in range(4)]
    assert len({tuple(x) for x in cues}) > 1, "goals should vary across episodes"


def test_make_vec_env_tmaze_monitor(tmp_path: "os.PathLike[str]") -> None:
    venv = make_vec_env("tmaze-3", n_envs=2, seed=0, monitor_dir=str(tmp_path))
    assert isinstance(venv, VecMonitor) and isinstance(venv.venv, TMazeVecEnv)
    assert venv.observation_space.shape == (8,)
    assert make_vec_env("tmaze-3", prev_action=False).observation_space.shape == (3,)
    obs = venv.reset()
    cue_up = obs[:, 0] > 0.5
    for _ in range(4):
        obs, rewards, dones, infos = venv.step(optimal_action(obs, cue_up))
    assert dones.all() and all(i["is_success"] and i["episode"]["r"] == 1.0 for i in infos)
    venv.close()
    text = (tmp_path / "vec.monitor.csv").read_text().splitlines()
    assert text[1].split(",")[-1] == "is_success" and len(text) == 4


class ScriptedTMazePolicy:
    """Optimal T-Maze policy with SB3's predict signature (remembers the cue in its state)."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):  # noqa: ANN001, ANN201
        cue_up = obs[:, 0] > 0.5 if state is None else np.where(episode_start, obs[:, 0] > 0.5, state)
        return optimal_action(obs, cue_up), cue_up


def test_evaluate_policy_reads_success() -> None:
    venv = make_vec_env("tmaze-20", n_envs=3, seed=1)
    returns, lengths = evaluate_policy(ScriptedTMazePolicy(), venv, n_eval_episodes=6, return_episode_rewards=True)
    assert returns == [1.0] * 6 and lengths == [21] * 6


def test_million_step_corridor_is_fast() -> None:
    length, n_envs = 1_000_000, 4
    venv = make_vec_env(f"tmaze-{length}", n_envs=n_envs, seed=0)
    obs = venv.reset()
    cue_up = obs[:, 0] > 0.5
    right = np.full(n_envs, RIGHT)
    returns = np.zeros(n_envs)
    start = time.perf_counter()
    for _ in range(length):
        obs, rewards, dones, _ = venv.step(right)
        returns += rewards
    assert not dones.any() and (obs[:, 2] == 1.0).all()
    obs, rewards, dones, infos = venv.step(optimal_action(obs, cue_up))
    elapsed = time.perf_counter() - start
    returns += rewards
    assert dones.all() and (returns == 1.0).all()
    assert all(i["is_success"] for i in infos)
    assert all(i["episode"]["l"] == length + 1 for i in infos)
    # ~7 us per step on one free core; generous for a shared machine.
    assert elapsed < 60, f"1e6-step T-Maze episode took {elapsed:.1f}s"


def test_ppo_and_recurrent_ppo_train_on_native_vec_env() -> None:
    # Truncated and terminated episodes both occur within 64 steps of a length-3 maze.
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    venv = make_vec_env("tmaze-3", n_envs=4, seed=0)
    PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64)
    RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu",
        policy_kwargs={"lstm_hidden_size": 8},
    ).learn(64)
