"""agents/: the registry, the YAML presets and ``--hp`` overrides, run-directory helpers (in-process, fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from gymnasium import spaces

from agents.hyperparams import (
    HYPERPARAMS_DIR,
    SHARED_KEYS,
    HyperparamError,
    _apply_layer,
    apply_overrides,
    load_hyperparams,
    parse_overrides,
    to_constructor_kwargs,
    validate_hyperparams,
    validate_policy_kwargs,
)
from agents.build import build_model, make_train_env
from agents.experiment import resolve_experiment
from agents.registry import ALGOS, UnknownAlgoError, UnknownPolicyError, algo_that_saved, get_algo
from agents.rundir import merge_monitor_files, stash_monitor_files
from agents.scores import summarize_evaluations, t_interval

ALGO_NAMES = list(ALGOS)
FAMILIES = ["popgym", "tmaze", "mikasa", "gym"]


def _env_names_in_presets(family: str) -> list[str]:
    """A representative env name per family, plus every per-env override key (patterns made concrete)."""
    base = {"popgym": "popgym-RepeatPreviousEasy-v0", "tmaze": "tmaze-30", "mikasa": "mikasa-RememberColor3-v0", "gym": "CartPole-v1"}[family]
    names = [base]
    for path in {HYPERPARAMS_DIR / "default.yml", HYPERPARAMS_DIR / f"{family}.yml"}:
        if path.exists():
            data = yaml.safe_load(path.read_text()) or {}
            names += [pattern.replace("*", "EscapeEasy-v0") for pattern in (data.get("envs") or {})]
    return names


# ------------------------------------------------------------------------------------------ registry


def test_get_algo_suggests_closest_names() -> None:
    assert get_algo("PPO-LSTM").name == "ppo-lstm"
    with pytest.raises(UnknownAlgoError) as err:
        get_algo("ppo-lstn")
    message = str(err.value)
    assert "ppo-lstm" in message and "\n" not in message


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_policy_follows_observation_space(algo: str) -> None:
    spec = ALGOS[algo]
    box = spaces.Box(-1, 1, (5,))
    image = spaces.Box(0, 255, (3, 32, 32), dtype=np.uint8)
    mixed = spaces.Dict({"state": box, "rgb": image})
    assert spec.policy_for(box) == spec.policies["mlp"]
    assert spec.policy_for(image) == spec.policies["cnn"]
    assert spec.policy_for(mixed) == spec.policies["multi_input"]
    for policy in spec.policies.values():  # every named policy exists in the library
        spec.policy_class(policy)


def test_algo_that_saved_reads_the_zip(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu").save(tmp_path / "ppo.zip")
    assert algo_that_saved(tmp_path / "ppo.zip") is ALGOS["ppo"]
    (tmp_path / "text.zip").write_text("not a zip")
    assert algo_that_saved(tmp_path / "text.zip") is None


def test_unknown_policy_is_refused_by_the_registry() -> None:
    exp = resolve_experiment("popgym-RepeatPrevious", "ppo", overrides=parse_overrides(["policy=MlpLstmPolicy"]))
    with pytest.raises(UnknownPolicyError, match="MlpPolicy"):
        exp.with_policy(spaces.Box(-1, 1, (5,)))


# ------------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("family", FAMILIES)
def test_presets_load_and_are_valid_for_every_algo(family: str) -> None:
    for env_name in _env_names_in_presets(family):
        for algo in ALGO_NAMES:
            spec = ALGOS[algo]
            hp = load_hyperparams(family, env_name, algo)
            validate_hyperparams(hp, spec)
            validate_policy_kwargs(hp["policy_kwargs"], spec, spec.policies["mlp"])
            to_constructor_kwargs(hp)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_protocol_for_every_algo(family: str) -> None:
    """Budget, n_envs, evaluation and PPO hyperparameters agree across algorithms unless a reason is recorded."""
    for env_name in _env_names_in_presets(family):
        resolved = {algo: load_hyperparams(family, env_name, algo) for algo in ALGO_NAMES}
        for key in sorted(SHARED_KEYS):
            values = {algo: hp.get(key) for algo, hp in resolved.items() if key not in hp.get("_differs_because", {})}
            assert len({json.dumps(v, sort_keys=True) for v in values.values()}) <= 1, f"{family}/{env_name}: {key} differs: {values}"


def test_popgym_preset_values() -> None:
    """The measured CPU-throughput settings of the brief; ELMUR and LSTM widths comparable."""
    elmur = load_hyperparams("popgym", "popgym-RepeatPreviousEasy-v0", "ppo-elmur")
    lstm = load_hyperparams("popgym", "popgym-RepeatPreviousEasy-v0", "ppo-lstm")
    for key, value in dict(n_envs=32, n_steps=128, batch_size=1024, n_epochs=4, gamma=0.99, gae_lambda=0.95).items():
        assert elmur[key] == lstm[key] == value
    assert elmur["policy_kwargs"]["segment_len"] == 16 and elmur["bptt_segments"] == 2
    assert lstm["policy_kwargs"]["lstm_hidden_size"] == 128
    tmaze = load_hyperparams("tmaze", "tmaze-30", "ppo-elmur")
    segment_len, episode_len = tmaze["policy_kwargs"]["segment_len"], 31
    # the cue must cross segments through the memory, and one training chain must hold the whole
    # episode so that the junction's gradient reaches the cue's write (see tmaze.yml)
    assert segment_len < episode_len <= tmaze["bptt_segments"] * segment_len


def test_preset_files_are_documented() -> None:
    for path in HYPERPARAMS_DIR.glob("*.yml"):
        comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
        assert len(comments) >= 5, f"{path.name} needs comments saying where its values come from"


def test_changing_a_shared_key_for_one_algo_needs_a_reason() -> None:
    with pytest.raises(HyperparamError, match="differs_because"):
        _apply_layer({}, {"ppo-lstm": {"n_steps": 256}}, "ppo-lstm", "test.yml")
    resolved = _apply_layer({}, {"ppo-lstm": {"n_steps": 256, "differs_because": {"n_steps": "why"}}}, "ppo-lstm", "test.yml")
    assert resolved["n_steps"] == 256 and resolved["_differs_because"] == {"n_steps": "why"}


# ------------------------------------------------------------------------------------------ --hp


def test_parse_overrides_types_and_dotted_keys() -> None:
    parsed = dict(
        (".".join(o.parts), o.value)
        for o in parse_overrides(["n_steps=256", "learning_rate=3e-4", "policy_kwargs.net_arch=[32, 32]", "env_kwargs.obs_mode=rgb", "target_kl=null"])
    )
    assert parsed == {"n_steps": 256, "learning_rate": 3e-4, "policy_kwargs.net_arch": [32, 32], "env_kwargs.obs_mode": "rgb", "target_kl": None}
    with pytest.raises(HyperparamError, match="key=value"):
        parse_overrides(["n_steps"])


def test_algo_prefixed_overrides_apply_to_that_algo_only() -> None:
    overrides = parse_overrides(["n_steps=64", "PPO-LSTM:policy_kwargs.lstm_hidden_size=16", "policy_kwargs.features_extractor_class=a.b:C"])
    assert [(o.algo, o.text) for o in overrides] == [
        (None, "n_steps=64"),
        ("ppo-lstm", "policy_kwargs.lstm_hidden_size=16"),
        (None, "policy_kwargs.features_extractor_class=a.b:C"),  # a ":" after the "=" is the value's
    ]
    for algo in ("ppo-lstm", "ppo-elmur"):
        exp = resolve_experiment("popgym-RepeatPrevious", algo, overrides=overrides[:2])
        assert exp.hyperparams["n_steps"] == 64
        assert ("lstm_hidden_size" in exp.hyperparams["policy_kwargs"]) == (algo == "ppo-lstm")
        assert exp.hp_overrides == [o.text for o in overrides[:2] if o.applies_to(algo)]
    with pytest.raises(UnknownAlgoError):
        parse_overrides(["ppo-lstn:n_steps=64"])


def test_schedules_take_numbers_or_lin() -> None:
    for bad in ("abc", "lin_abc", True):
        with pytest.raises(HyperparamError, match="lin_<initial value>"):
            to_constructor_kwargs({"learning_rate": bad})
    assert to_constructor_kwargs({"learning_rate": 0, "clip_range_vf": None})[0]["learning_rate"] == 0


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_apply_overrides_and_unknown_keys(algo: str) -> None:
    spec = ALGOS[algo]
    hp = load_hyperparams("popgym", "popgym-RepeatPreviousEasy-v0", algo)
    new = apply_overrides(hp, parse_overrides(["n_steps=64", "policy_kwargs.ortho_init=false", "env_kwargs.foo=1"]), spec)
    assert new["n_steps"] == 64 and new["policy_kwargs"]["ortho_init"] is False and new["env_kwargs"] == {"foo": 1}
    assert hp["n_steps"] == 128  # the preset itself is untouched
    # a kept preset key survives a sibling override
    assert set(hp["policy_kwargs"]) <= set(new["policy_kwargs"])
    with pytest.raises(HyperparamError) as err:
        apply_overrides(hp, parse_overrides(["n_stepz=64"]), spec)
    assert "n_steps" in str(err.value) and "n_timesteps" in str(err.value)
    with pytest.raises(HyperparamError) as err:
        validate_policy_kwargs({"no_such_key": 1}, spec, spec.policies["mlp"])
    assert "net_arch" in str(err.value)


def test_elmur_policy_kwargs_are_checked_against_its_policy() -> None:
    spec = ALGOS["ppo-elmur"]
    validate_policy_kwargs({"segment_len": 8, "memory_slots": 4, "d_model": 32}, spec, "MlpElmurPolicy")
    with pytest.raises(HyperparamError, match="segment_len"):
        validate_policy_kwargs({"segment_length": 8}, spec, "MlpElmurPolicy")
    assert "bptt_segments" in spec.algo_kwarg_names()


def test_constructor_kwargs_convert_yaml_strings() -> None:
    import torch.nn as nn

    algo_kwargs, protocol = to_constructor_kwargs(
        {"n_timesteps": 10, "policy_kwargs": {"activation_fn": "relu"}, "learning_rate": "lin_1e-3", "_sources": []}
    )
    assert algo_kwargs["policy_kwargs"]["activation_fn"] is nn.ReLU
    assert algo_kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert protocol["n_timesteps"] == 10 and "n_timesteps" not in algo_kwargs and "_sources" not in algo_kwargs


# ------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_every_algo_builds_and_predicts_on_popgym(algo: str, tmp_path: Path) -> None:
    """The preset builds a model on a real POPGym VecEnv, and predict carries the recurrent state."""
    exp = resolve_experiment("popgym-RepeatPrevious", algo, overrides=parse_overrides(["n_envs=2", "n_steps=16", "batch_size=32"]))
    venv = make_train_env(exp, tmp_path / "monitor", seed=0)
    try:
        model = build_model(exp, venv, tmp_path / "tb", device="cpu")
        assert exp.hyperparams["policy"] is None  # the experiment is left as it was
        assert exp.with_policy(venv.observation_space).hyperparams["policy"] == ALGOS[algo].policies["mlp"]
        assert type(model.policy) is ALGOS[algo].policy_class(ALGOS[algo].policies["mlp"])
        obs = venv.reset()
        state, starts = None, np.ones(2, dtype=bool)
        for _ in range(3):
            actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
            obs, _, dones, _ = venv.step(actions)
            starts = dones
            if ALGOS[algo].recurrent:
                assert state is not None
    finally:
        venv.close()


# ------------------------------------------------------------------------------------------ run-dir helpers


def _write_monitor(path: Path, t_start: float, rows: list[tuple[float, int, float]]) -> None:
    with open(path, "w") as f:
        f.write(json.dumps({"t_start": t_start, "env_id": "x"}).join(["#", "\n"]))
        f.write("r,l,t\n")
        for r in rows:
            f.write(",".join(map(str, r)) + "\n")


def test_monitor_files_are_appended_on_resume(tmp_path: Path) -> None:
    _write_monitor(tmp_path / "0.monitor.csv", 100.0, [(1.0, 5, 1.0), (0.0, 5, 2.0)])
    stash_monitor_files(tmp_path)
    assert not (tmp_path / "0.monitor.csv").exists()
    _write_monitor(tmp_path / "0.monitor.csv", 110.0, [(1.0, 7, 0.5)])  # the resumed session's Monitor
    merge_monitor_files(tmp_path)
    lines = (tmp_path / "0.monitor.csv").read_text().splitlines()
    assert json.loads(lines[0][1:])["t_start"] == 100.0
    rows = list(csv.DictReader(lines[1:]))
    assert [int(r["l"]) for r in rows] == [5, 5, 7]
    assert float(rows[-1]["t"]) == pytest.approx(10.5)  # shifted onto the first session's clock
    assert not list(tmp_path.glob("*.prev"))


def test_summarize_evaluations_metrics() -> None:
    evals = {
        "timesteps": np.array([10, 20, 30]),
        "results": np.array([[0.0, 0.2], [0.9, 0.7], [0.5, 0.5]]),
        "ep_lengths": np.ones((3, 2)),
        "successes": np.array([[0, 0], [1, 1], [1, 0]]),
    }
    mmer = summarize_evaluations(evals, "mmer")
    assert mmer["score"] == pytest.approx(0.8) and mmer["best_mean_return_timesteps"] == 20 and mmer["n_evaluations"] == 3
    success = summarize_evaluations(evals, "success_rate")
    assert success["score"] == pytest.approx(0.5) and success["best_success_rate"] == pytest.approx(1.0)
    assert summarize_evaluations(None, "mmer")["score"] is None


def test_t_interval() -> None:
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)
