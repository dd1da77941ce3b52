"""POPGym names, wrappers and vectorized envs, with SB3 PPO and sb3-contrib RecurrentPPO."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import (
    FlattenOneHotObservation,
    PrevActionReward,
    UnknownEnvError,
    env_family,
    list_env_names,
    make_vec_env,
    resolve_env_name,
)
from envs.popgym_envs import make_popgym_env, popgym_short_names, popgym_table

POPGYM_NAMES = popgym_short_names()

# popgym warns that mazes are weak memory benchmarks; the labyrinths are still tested.
pytestmark = pytest.mark.filterwarnings("ignore:Maze environments:DeprecationWarning")


def flat_action_size(space: spaces.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    assert isinstance(space, spaces.Box)
    return int(np.prod(space.shape))


def test_all_48_popgym_envs_are_listed() -> None:
    assert len(POPGYM_NAMES) == 48
    assert len({base for _, base in popgym_table().values()}) == 16
    assert set(POPGYM_NAMES) <= set(list_env_names())
    assert any(n.startswith("popgym-Labyrinth") for n in POPGYM_NAMES)


@pytest.mark.parametrize("short", POPGYM_NAMES)
def test_popgym_names_resolve(short: str) -> None:
    gym_id, base = popgym_table()[short]
    assert gym_id in gym.envs.registry
    for spelling in (short, gym_id, short.lower(), gym_id.upper(), short + "-v0"):
        assert resolve_env_name(spelling) == gym_id
    assert env_family(short) == "popgym"
    if short.endswith("Easy"):
        assert resolve_env_name("popgym-" + base) == gym_id
        assert resolve_env_name("popgym-" + base + "-v0") == gym_id


def test_examples_from_the_docs() -> None:
    assert resolve_env_name("popgym-RepeatPrevious") == "popgym-RepeatPreviousEasy-v0"
    assert resolve_env_name("popgym-VelocityOnlyCartPoleHard") == "popgym-VelocityOnlyCartpoleHard-v0"
    assert resolve_env_name("CartPole-v1") == "CartPole-v1"
    assert env_family("CartPole-v1") == "gym"


@pytest.mark.parametrize(
    "name,suggestion",
    [
        ("popgym-RepeatPrevius", "popgym-RepeatPrevious"),
        ("popgym-CountRecalHard", "popgym-CountRecallHard"),
        ("CartPol-v1", "CartPole-v1"),
    ],
)
def test_unknown_names_suggest_close_matches(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownEnvError) as excinfo:
        resolve_env_name(name)
    message = str(excinfo.value)
    assert "\n" not in message and repr(suggestion) in message
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(UnknownEnvError):
        make_vec_env(name)


def test_tmaze_bad_length_is_unknown() -> None:
    for name in ("tmaze-0", "tmaze-abc"):
        with pytest.raises(UnknownEnvError, match="tmaze-<corridor length"):
            resolve_env_name(name)


def test_mikasa_names() -> None:
    assert env_family("mikasa-RememberColor3") == "mikasa"
    try:
        from envs.mikasa import MIKASA_TASKS
    except ImportError:
        # Without envs.mikasa (ManiSkill3 not set up) the error says how to install it.
        with pytest.raises(ImportError, match="bash scripts/install_mikasa.sh") as excinfo:
            make_vec_env("mikasa-RememberColor3")
        assert "\n" not in str(excinfo.value)
        return
    assert len(MIKASA_TASKS) == 32
    assert resolve_env_name("mikasa-RememberColor3") == "mikasa-RememberColor3"
    assert resolve_env_name("MIKASA-remembercolor3-v0") == "mikasa-RememberColor3"
    with pytest.raises(UnknownEnvError, match="'mikasa-RememberColor3'"):
        resolve_env_name("mikasa-RememberColr3")


def test_one_hot_flattening_of_tuple_and_multidiscrete() -> None:
    # AutoencodeEasy: Tuple(Discrete(2), Discrete(4)), which SB3 refuses as is.
    raw = make_popgym_env("popgym-AutoencodeEasy-v0")
    assert isinstance(raw.observation_space, spaces.Tuple)
    env = FlattenOneHotObservation(raw)
    assert env.observation_space == spaces.Box(0.0, 1.0, (6,), np.float32)
    np.testing.assert_array_equal(env.observation((1, 2)), [0, 1, 0, 0, 1, 0])
    # CountRecallEasy: MultiDiscrete([2, 2]), which crashes RecurrentPPO's LSTM as is.
    env = FlattenOneHotObservation(make_popgym_env("popgym-CountRecallEasy-v0"))
    assert env.observation_space.shape == (4,)
    np.testing.assert_array_equal(env.observation(np.array([1, 0])), [0, 1, 1, 0])
    # Box observations pass through unchanged (cast to float32).
    env = FlattenOneHotObservation(make_popgym_env("popgym-PositionOnlyCartPoleEasy-v0"))
    assert env.observation_space.shape == (2,)
    np.testing.assert_array_equal(env.observation_space.high, np.float32([4.8, 0.41887903]))


def test_prev_action_layout_multidiscrete_and_box() -> None:
    # Battleship: MultiDiscrete([8, 8]) actions -> two one-hot blocks, then the reward.
    env = PrevActionReward(FlattenOneHotObservation(make_popgym_env("popgym-BattleshipEasy-v0")))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2 + 16 + 1,) and not obs[2:].any()
    obs, reward, *_ = env.step(np.array([3, 5]))
    expected = np.zeros(17, np.float32)
    expected[3] = expected[8 + 5] = 1.0
    expected[-1] = reward
    np.testing.assert_array_equal(obs[2:], expected)
    # Pendulum: Box(-2, 2) actions -> the clipped raw action.
    env = PrevActionReward(FlattenOneHotObservation(make_popgym_env("popgym-PositionOnlyPendulumEasy-v0")))
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([5.0], np.float32))
    assert obs[2] == 2.0 and obs[3] == np.float32(reward)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("prev_action", [True, False], ids=["prev", "noprev"])
@pytest.mark.parametrize("short", POPGYM_NAMES)
def test_make_vec_env_steps(short: str, prev_action: bool) -> None:
    n_envs = 2
    venv = make_vec_env(short, n_envs=n_envs, seed=0, prev_action=prev_action)
    space = venv.observation_space
    assert isinstance(space, spaces.Box) and space.dtype == np.float32 and len(space.shape) == 1
    raw = make_popgym_env(resolve_env_name(short))
    obs_size = FlattenOneHotObservation(raw).observation_space.shape[0]
    act_size = flat_action_size(raw.action_space)
    assert space.shape[0] == obs_size + (act_size + 1 if prev_action else 0)

    obs = venv.reset()
    assert obs.dtype == np.float32 and obs.shape == (n_envs, space.shape[0])
    if prev_action:
        assert not obs[:, obs_size:].any(), "prev-action features are zero at episode start"
    for _ in range(4):
        actions = np.stack([venv.action_space.sample() for _ in range(n_envs)])
        obs, rewards, dones, infos = venv.step(actions)
        assert obs.dtype == np.float32 and obs.shape == (n_envs, space.shape[0])
        for i in range(n_envs):
            final = infos[i]["terminal_observation"] if dones[i] else obs[i]
            assert space.contains(final)
            if prev_action:
                assert final[-1] == np.float32(rewards[i])
                if isinstance(venv.action_space, spaces.Discrete):
                    assert final[obs_size + int(actions[i])] == 1.0
                    assert final[obs_size : obs_size + act_size].sum() == 1.0
    venv.close()


@pytest.mark.parametrize("short", POPGYM_NAMES)
def test_ppo_and_recurrent_ppo_predict(short: str) -> None:
    torch.set_num_threads(1)
    venv = make_vec_env(short, n_envs=2, seed=0)
    obs = venv.reset()
    ppo = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, seed=0, device="cpu")
    rppo = RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=8, batch_size=8, seed=0, device="cpu", policy_kwargs={"lstm_hidden_size": 8}
    )
    state, starts = None, np.ones(2, dtype=bool)
    for _ in range(3):
        actions, _ = ppo.predict(obs)
        assert venv.action_space.contains(actions[0])
        actions, state = rppo.predict(obs, state=state, episode_start=starts)
        obs, _, starts, _ = venv.step(actions)
    venv.close()


@pytest.mark.parametrize(
    "short", ["popgym-RepeatPreviousEasy", "popgym-BattleshipEasy", "popgym-PositionOnlyPendulumHard"]
)
def test_short_training_runs(short: str) -> None:
    # One of each action space kind (Discrete, MultiDiscrete, Box) through a full PPO update.
    torch.set_num_threads(1)
    venv = make_vec_env(short, n_envs=2, seed=0)
    PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu").learn(32)
    RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
        policy_kwargs={"lstm_hidden_size": 8},
    ).learn(32)


def test_time_limit_is_truncation_and_termination_is_not() -> None:
    # MultiarmedBanditEasy runs into its 200-step limit; RepeatPreviousEasy terminates after 51 steps.
    cases = [("popgym-MultiarmedBanditEasy", 200, True), ("popgym-RepeatPreviousEasy", 51, False)]
    for short, length, truncated in cases:
        venv = make_vec_env(short, n_envs=1, seed=0)
        venv.reset()
        for step in range(1, length + 1):
            _, _, dones, infos = venv.step(np.array([venv.action_space.sample()]))
            if dones[0]:
                break
        assert step == length and dones[0]
        assert infos[0]["TimeLimit.truncated"] is truncated
        assert "terminal_observation" in infos[0] and infos[0]["episode"]["l"] == length


def test_monitor_files_and_subproc(tmp_path: "os.PathLike[str]") -> None:
    venv = make_vec_env("popgym-RepeatPreviousEasy", n_envs=2, seed=0, monitor_dir=str(tmp_path), vec_env_cls="subproc")
    venv.reset()
    for _ in range(52):
        venv.step(np.array([0, 1]))
    venv.close()
    for rank in range(2):
        lines = (tmp_path / f"{rank}.monitor.csv").read_text().splitlines()
        assert len(lines) == 3 and lines[2].split(",")[1] == "51"


def test_other_gymnasium_ids() -> None:
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    assert venv.observation_space.shape == (4 + 2 + 1,)
    assert make_vec_env("CartPole-v1", prev_action=False).observation_space.shape == (4,)
    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=0, env_kwargs={"g": 9.0})
    assert venv.observation_space.shape == (3 + 1 + 1,)
    assert venv.get_attr("g")[0] == 9.0
    obs = venv.reset()
    obs, *_ = venv.step(np.array([[1.5]], np.float32))
    assert obs[0, 3] == 1.5
    assert isinstance(venv, DummyVecEnv)
