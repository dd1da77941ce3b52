"""The ELMUR library: the model's two paths, PPOElmur's update, SB3 citizenship, errors, memory."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from cue_env import CueRecallEnv
from elmur_sb3 import ElmurConfig, ElmurCore, PPOElmur
from elmur_sb3.core import SegmentStart, attend
from elmur_sb3.policy import ElmurStates

th.set_num_threads(1)

SMALL = dict(d_model=16, n_layers=2, n_heads=2, segment_len=4, memory_slots=3, net_arch=[16])


# --------------------------------------------------------------------------------------------
# the model: step path == segment path


@pytest.mark.parametrize(
    "segment_len,memory_slots,use_lru,init_std,position_embedding,cache_len,norm_first",
    [
        (1, 2, True, 0.0, False, 0, False), (3, 1, True, 0.0, False, 0, False), (4, 3, True, 0.3, False, 0, False),
        (5, 2, False, 0.0, False, 0, False), (7, 4, True, 0.0, False, 0, False), (4, 2, True, 0.0, True, 0, False),
        (6, 3, True, 0.2, True, 0, False),
        # the attention cache: 1, L - 1, L and 2L + 3 tokens before the segment start
        (4, 2, True, 0.0, False, 1, False), (4, 2, True, 0.1, True, 3, False), (4, 3, True, 0.0, False, 4, False),
        (3, 2, True, 0.0, False, 9, False), (1, 2, True, 0.0, False, 5, False),
        # pre-norm blocks (norm_first), with and without the cache
        (4, 2, True, 0.1, False, 0, True), (4, 3, True, 0.0, True, 5, True),
        # GTrXL's gated residuals (norm_first + residual_gate, marked by norm_first="gated")
        (4, 2, True, 0.1, False, 0, "gated"), (3, 3, True, 0.0, True, 7, "gated"),
    ],
)  # fmt: skip
def test_step_path_equals_segment_path(
    segment_len, memory_slots, use_lru, init_std, position_embedding, cache_len, norm_first
):
    residual_gate = norm_first == "gated"
    norm_first = bool(norm_first)
    th.manual_seed(segment_len * 10 + memory_slots)
    config = ElmurConfig(
        d_model=16, n_layers=2, n_heads=4, segment_len=segment_len, memory_slots=memory_slots,
        use_lru=use_lru, memory_init_std=init_std, max_dist=6, position_embedding=position_embedding,
        cache_len=cache_len, norm_first=norm_first, residual_gate=residual_gate,
    )  # fmt: skip
    core = ElmurCore(config, input_dim=5)
    # Perturb the zero-initialised biases so they matter in the comparison.
    for layer in core.layers:
        th.nn.init.normal_(layer.self_bias)
        th.nn.init.normal_(layer.memory_bias.table.weight)
    if core.position is not None:
        th.nn.init.normal_(core.position.weight)
    batch, length = 3, 6 * segment_len + 2
    features = th.randn(batch, length, 5)
    state = core.initial_state(batch, "cpu")
    first_start = state.start
    step_outputs = []
    with th.no_grad():
        for t in range(length):
            h, state, _ = core.step(features[:, t], state)
            step_outputs.append(h)
        segment_start, segment_outputs = first_start, []
        for start in range(0, length, segment_len):
            h, segment_start, _ = core.forward_segment(
                features[:, start : start + segment_len], segment_start, th.full((batch,), start)
            )
            segment_outputs.append(h)
    diff = (th.stack(step_outputs, 1) - th.cat(segment_outputs, 1)).abs().max().item()
    assert diff < 1e-5
    # the memory and cache the step path ends with are those after the last complete segment
    complete = (length // segment_len) * segment_len
    segment_start = first_start
    with th.no_grad():
        for start in range(0, complete, segment_len):
            _, segment_start, _ = core.forward_segment(
                features[:, start : start + segment_len], segment_start, th.full((batch,), start)
            )
    assert th.equal(segment_start.memory.times, state.memory.times)
    assert (segment_start.memory.vectors - state.memory.vectors).abs().max().item() < 1e-5
    assert th.allclose(segment_start.cache, state.start.cache, atol=1e-5)


@pytest.mark.parametrize("n_keys", [1, 2, 8, 15, 16, 40])
def test_attend_is_softmax_attention_for_short_and_long_rows(n_keys):
    """Rows shorter than 16 keys take another softmax kernel (a CPU speed-up): the same numbers."""
    th.manual_seed(n_keys)
    query, key, value = th.randn(3, 4, 5, 8), th.randn(3, 4, n_keys, 8), th.randn(3, 4, n_keys, 8)
    bias = th.randn(3, 4, 5, n_keys)
    bias[..., 0, 1:] = float("-inf")  # a masked row, as the causal mask makes them
    attended, weights = attend(query, key, value, bias)
    expected = (query @ key.transpose(-1, -2) / 8**0.5 + bias).softmax(-1)
    assert th.allclose(weights, expected, atol=1e-6)
    assert th.allclose(attended, expected @ value, atol=1e-5)
    assert th.allclose(weights.sum(-1), th.ones(3, 4, 5))


def test_step_leaves_the_state_it_was_given_unchanged():
    """The step path writes into copies: a caller may step twice from one state (PPOElmur's bootstrap values do)."""
    th.manual_seed(0)
    core = ElmurCore(ElmurConfig(d_model=16, n_layers=2, n_heads=2, segment_len=3, cache_len=2, memory_slots=2), 5)
    state = core.initial_state(4, "cpu")
    with th.no_grad():
        for _ in range(5):  # mid-segment, after one segment's write
            _, state, _ = core.step(th.randn(4, 5), state)
        before = [x.clone() for x in (state.keys, state.values, state.inputs, state.outputs, state.start.cache)]
        features = th.randn(4, 5)
        first, _, _ = core.step(features, state)
        second, _, _ = core.step(features, state)
    assert th.equal(first, second)
    after = (state.keys, state.values, state.inputs, state.outputs, state.start.cache)
    assert all(th.equal(x, y) for x, y in zip(before, after))


def test_step_keeps_the_memory_read_keys_in_step_with_the_memory():
    """The read's keys and values are projected at segment ends and episode starts only: they must always be
    those of the memory the state holds, whichever rows reset or finish a segment."""
    th.manual_seed(1)
    core = ElmurCore(ElmurConfig(d_model=16, n_layers=2, n_heads=2, segment_len=3, memory_slots=2, memory_init_std=0.5), 5)
    state = core.initial_state(4, "cpu")
    with th.no_grad():
        for t in range(11):
            state = core.reset(state, th.tensor([t == 4, t % 3 == 1, False, t == 9]))
            _, state, _ = core.step(th.randn(4, 5), state)
            keys, values = core.memory_keys_values(state.start.memory.vectors)
            assert th.allclose(state.memory_keys, keys, atol=1e-6) and th.allclose(state.memory_values, values, atol=1e-6)


@pytest.mark.parametrize("alibi_init", [True, False])
def test_self_attention_starts_recency_weighted_with_alibi_init(alibi_init):
    # A fresh core on constant tokens: attention differs across keys only through the bias. With
    # alibi_init every head prefers nearer steps, each head at its own rate; without it, uniform.
    config = ElmurConfig(d_model=16, n_heads=4, segment_len=4, cache_len=4, alibi_init=alibi_init)
    layer = ElmurCore(config, input_dim=3).layers[0]
    query, keys = th.tensor([3]), th.arange(-4, 4)  # the last token of a segment and everything before it
    bias = layer.self_attention_bias(query, keys, th.ones(1, 8, dtype=th.bool))  # (1, H, 1, 8)
    weights = bias.softmax(-1)[0, :, 0]
    if alibi_init:
        assert (weights.diff(dim=-1) > 0).all()  # keys are oldest first: nearer keys weigh more
        assert len(set(weights[:, -1].tolist())) == config.n_heads
    else:
        assert th.allclose(weights, th.full_like(weights, 1 / 8))


def test_lru_rule_rewrites_empty_then_blends_oldest():
    from elmur_sb3.memory import initial_memory, write_memory

    memory = initial_memory(n_layers=1, batch_size=1, memory_slots=2, d_model=1, init_std=0.0, device="cpu")
    vectors, times = memory
    for end_time, value in [(3, 1.0), (7, 2.0), (11, 4.0), (15, 8.0)]:
        vectors, times = write_memory(vectors, times, th.full_like(vectors, value), th.tensor([end_time]), 0.5, True)
    # slots: written at 3 (1.0) and 7 (2.0); then the oldest (slot 0) blended at 11, slot 1 at 15
    assert times.tolist() == [[11, 15]]
    assert vectors.flatten().tolist() == [0.5 * 4.0 + 0.5 * 1.0, 0.5 * 8.0 + 0.5 * 2.0]
    vectors, times = write_memory(vectors, times, th.full_like(vectors, 9.0), th.tensor([19]), 0.5, False)
    assert times.tolist() == [[19, 19]] and vectors.flatten().tolist() == [9.0, 9.0]


@pytest.mark.parametrize("write_gate", [False, True])
def test_segment_write_computes_only_the_lru_slot_and_matches_every_slot_computed(write_gate):
    """The memory track runs for the one slot the LRU rule writes; computing all slots gives the same memory."""
    from elmur_sb3.memory import write_memory

    th.manual_seed(7)
    config = ElmurConfig(d_model=16, n_layers=2, n_heads=4, segment_len=3, memory_slots=3, cache_len=2, write_gate=write_gate)
    core = ElmurCore(config, input_dim=5)
    for layer in core.layers:
        th.nn.init.normal_(layer.memory_bias.table.weight)
    start = core.initial_segment_start(4, "cpu")
    # rows with empty slots, a full memory, and ties between timestamps
    times = th.tensor([[-1, -1, -1], [2, -1, 5], [8, 5, 11], [4, 4, 9]])
    start = SegmentStart(start.memory._replace(vectors=th.randn_like(start.memory.vectors), times=times), th.randn_like(start.cache))
    inputs, outputs = list(th.randn(2, 4, 3, 16)), list(th.randn(2, 4, 3, 16))
    token_times = th.tensor([12, 13, 14])[None].expand(4, -1)
    written = core.next_segment_start(start, inputs, outputs, token_times)
    memory = start.memory
    every = th.stack([layer.memory_candidates(memory.vectors[i], memory.times, outputs[i], token_times) for i, layer in enumerate(core.layers)])
    gate = th.stack([layer.write_strength(c) for layer, c in zip(core.layers, every)]) if write_gate else None
    vectors, times = write_memory(memory.vectors, memory.times, every, token_times[:, -1], config.lru_blend, True, gate)
    assert th.equal(written.memory.times, times)
    assert th.allclose(written.memory.vectors, vectors, atol=1e-6)
    assert not th.equal(vectors, memory.vectors)  # the write changed something


def test_write_gate_paths_agree_and_a_closed_gate_keeps_the_slots():
    th.manual_seed(5)
    config = ElmurConfig(d_model=16, n_layers=2, n_heads=4, segment_len=3, memory_slots=2, cache_len=2, write_gate=True)
    core = ElmurCore(config, input_dim=5)
    for layer in core.layers:
        th.nn.init.normal_(layer.write_gate.weight)
    features = th.randn(2, 14, 5)
    state, steps = core.initial_state(2, "cpu"), []
    with th.no_grad():
        for t in range(14):
            h, state, _ = core.step(features[:, t], state)
            steps.append(h)
        start, segments = core.initial_segment_start(2, "cpu"), []
        for t0 in range(0, 14, 3):
            h, start, _ = core.forward_segment(features[:, t0 : t0 + 3], start, th.full((2,), t0))
            segments.append(h)
    assert th.allclose(th.stack(steps, 1), th.cat(segments, 1), atol=1e-5)
    # A closed gate: once both slots are written, later segments change their timestamps only.
    for layer in core.layers:
        th.nn.init.zeros_(layer.write_gate.weight)
        th.nn.init.constant_(layer.write_gate.bias, -40.0)
    state = core.initial_state(2, "cpu")
    with th.no_grad():
        for t in range(6):
            _, state, _ = core.step(features[:, t], state)
        full = state.memory.vectors.clone()
        for t in range(6, 14):
            _, state, _ = core.step(features[:, t], state)
    assert th.equal(state.memory.vectors, full)
    assert state.memory.times.tolist() == [[8, 11], [8, 11]]
    with pytest.raises(ValueError, match="write_gate gates the LRU update"):
        ElmurConfig(write_gate=True, use_lru=False)


def test_residual_gate_starts_near_the_identity_and_needs_pre_norm():
    """GTrXL's gate: at initialisation each block moves the residual stream by ~12% of the way (b_g = 2), and
    a gate with every update closed returns the stream unchanged (the layer is the identity on tokens)."""
    from elmur_sb3.core import GRUGate

    th.manual_seed(0)
    gate = GRUGate(8)
    x, y = th.randn(5, 8), th.randn(5, 8)
    with th.no_grad():
        update = th.sigmoid(gate.from_input(y).chunk(3, -1)[1] + gate.from_state(x).chunk(2, -1)[1] - gate.gate_bias)
        assert 0.05 < update.mean() < 0.2
        th.nn.init.constant_(gate.gate_bias, 60.0)
        assert th.allclose(gate(x, y), x, atol=1e-6)
    config = ElmurConfig(d_model=16, n_layers=2, n_heads=4, segment_len=3, memory_slots=2, norm_first=True, residual_gate=True)
    layer = ElmurCore(config, input_dim=5).layers[0]
    assert all(isinstance(g, GRUGate) for g in (layer.gate_self, layer.gate_read, layer.gate_ffn))
    with pytest.raises(ValueError, match="residual_gate gates pre-norm residual blocks"):
        ElmurConfig(residual_gate=True)


def test_output_scale_scales_what_the_heads_read_not_what_the_memory_writes():
    th.manual_seed(3)
    configs = [ElmurConfig(d_model=16, n_layers=2, n_heads=4, segment_len=3, memory_slots=2, cache_len=2, output_scale=s)
               for s in (1.0, None)]  # fmt: skip
    assert configs[1].output_scale == pytest.approx(0.25)
    cores = [ElmurCore(config, input_dim=5) for config in configs]
    cores[1].load_state_dict(cores[0].state_dict())
    features = th.randn(2, 10, 5)
    states = [core.initial_state(2, "cpu") for core in cores]
    with th.no_grad():
        for t in range(10):
            (h_plain, states[0], _), (h_scaled, states[1], _) = (
                core.step(features[:, t], state) for core, state in zip(cores, states)
            )
            assert th.allclose(h_scaled, 0.25 * h_plain, atol=1e-6)
            # post-norm output: layer-normed, norm sqrt(d_model) = 4; scaled, norm 1
            assert th.allclose(h_scaled.norm(dim=-1), th.ones(2), atol=1e-3)
        segment_out, _, _ = cores[1].forward_segment(features[:, :3], cores[1].initial_segment_start(2, "cpu"), th.zeros(2, dtype=th.long))
    assert th.equal(states[0].memory.vectors, states[1].memory.vectors)
    with th.no_grad():
        first_steps = []
        state = cores[1].initial_state(2, "cpu")
        for t in range(3):
            h, state, _ = cores[1].step(features[:, t], state)
            first_steps.append(h)
    assert th.allclose(th.stack(first_steps, 1), segment_out, atol=1e-5)
    with pytest.raises(ValueError, match="output_scale must be > 0"):
        ElmurConfig(output_scale=0.0)


# --------------------------------------------------------------------------------------------
# PPOElmur's update recomputes what the rollout saw


def _record_train_inputs(model: PPOElmur) -> list[tuple[float, float]]:
    """Wrap ``model.train`` to measure, before each update, the segment path's deviation from the rollout."""
    deviations = []
    original_train = model.train

    def train() -> None:
        for data in model.rollout_buffer.get(10**9):
            actions = data.actions
            if isinstance(model.action_space, spaces.Discrete):
                actions = actions.long().flatten()
            with th.no_grad():
                values, log_prob, _, _ = model.policy.evaluate_chains(
                    data.observations, actions, data.start_times, data.start_pi, data.start_vf
                )
            mask = data.loss_mask
            deviations.append(
                (
                    (log_prob - data.old_log_prob)[mask].abs().max().item(),
                    (values - data.old_values)[mask].abs().max().item(),
                )
            )
        original_train()

    model.train = train
    return deviations


@pytest.mark.parametrize(
    "bptt_segments,shared_core,position_embedding", [(1, True, False), (3, True, True), (2, False, False)]
)
def test_update_recomputes_rollout_exactly(bptt_segments, shared_core, position_embedding):
    # CartPole's episodes end at random times; n_steps=37 with segment_len=4 makes rollouts begin mid-segment.
    venv = make_vec_env("CartPole-v1", n_envs=3, seed=1)
    model = PPOElmur(
        "MlpElmurPolicy", venv, n_steps=37, batch_size=40, n_epochs=1, learning_rate=0.0, seed=0,
        bptt_segments=bptt_segments, policy_kwargs=dict(
            SMALL, shared_core=shared_core, memory_init_std=0.1, position_embedding=position_embedding
        ),
    )  # fmt: skip
    assert_update_is_exact(model, n_updates=5)


def assert_update_is_exact(model: PPOElmur, n_updates: int) -> None:
    """Train a ``learning_rate=0`` model for ``n_updates`` rollouts: the segment path must give the
    rollout's log-probs and values, and the update's ratio must be exactly 1."""
    deviations = _record_train_inputs(model)
    model.learn(model.n_steps * model.n_envs * n_updates)
    assert len(deviations) == n_updates
    assert max(d[0] for d in deviations) < 1e-5
    assert max(d[1] for d in deviations) < 1e-5
    assert model.logger.name_to_value["train/approx_kl"] < 1e-9
    assert model.logger.name_to_value["train/clip_fraction"] == 0.0


def test_compiled_cores_compute_the_same_function(tmp_path):
    # torch.compile takes a minute or more on a CPU: one core of one layer covers both paths, the update and saving.
    venv = make_vec_env("CartPole-v1", n_envs=3, seed=1)
    kwargs = dict(n_steps=37, batch_size=40, n_epochs=1, learning_rate=0.0, seed=0, bptt_segments=2)
    small = dict(SMALL, n_layers=1, shared_core=True)
    model = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=dict(small, compile_cores=True), **kwargs)
    assert_update_is_exact(model, n_updates=2)  # the compiled step path against the compiled segment path
    del model.train  # the recording wrapper
    eager = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=small, **kwargs).policy
    eager.load_state_dict(model.policy.state_dict())
    data = next(iter(model.rollout_buffer.get(10**9)))
    actions = data.actions.long().flatten()
    # with gradients, as in the update: a no_grad call would compile another graph
    compiled_out, eager_out = (
        policy.evaluate_chains(data.observations, actions, data.start_times, data.start_pi, data.start_vf)[:2]
        for policy in (model.policy, eager)
    )
    for compiled_part, eager_part in zip(compiled_out, eager_out):
        assert (compiled_part - eager_part).abs().max().item() < 1e-5
    model.save(tmp_path / "m.zip")
    assert PPOElmur.load(tmp_path / "m.zip").policy.compile_cores


# --------------------------------------------------------------------------------------------
# isolation between envs and episode resets


def test_envs_are_isolated_and_episode_start_resets():
    venv = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    model = PPOElmur("MlpElmurPolicy", venv, seed=0, policy_kwargs=SMALL)
    policy = model.policy
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(12, 3, 4)).astype(np.float32)
    other = obs.copy()
    other[:, 1] = rng.normal(size=(12, 4))  # env 1 sees something else

    def probs(obs_t: np.ndarray, state, starts) -> tuple[th.Tensor, object]:
        # SB3 reuses one distribution object per policy: copy the probabilities out at once
        with th.no_grad():
            distribution, state = policy.get_distribution(th.as_tensor(obs_t), state, th.as_tensor(starts))
        return distribution.distribution.probs.clone(), state

    state_a = state_b = policy.initial_state(3)
    for t in range(12):
        start = np.array([t == 0] * 3)
        probs_a, state_a = probs(obs[t], state_a, start)
        probs_b, state_b = probs(other[t], state_b, start)
        assert th.equal(probs_a[[0, 2]], probs_b[[0, 2]])
        assert not th.equal(probs_a[1], probs_b[1])
    # an episode start in env 2 gives exactly a fresh state's output; envs 0 and 1 go on
    fresh_obs = rng.normal(size=(3, 4)).astype(np.float32)
    probs_reset, state_reset = probs(fresh_obs, state_a, np.array([False, False, True]))
    probs_fresh, _ = probs(fresh_obs, policy.initial_state(3), np.ones(3, dtype=bool))
    probs_cont, _ = probs(fresh_obs, state_a, np.zeros(3, dtype=bool))
    assert th.equal(probs_reset[2], probs_fresh[2])
    assert th.equal(probs_reset[:2], probs_cont[:2])
    assert not th.equal(probs_reset[2], probs_cont[2])
    assert state_reset.pi.episode_time.tolist() == [13, 13, 1]


# --------------------------------------------------------------------------------------------
# SB3 citizenship


def test_save_load_predict_and_evaluate(tmp_path):
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOElmur("MlpElmurPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, policy_kwargs=SMALL)
    model.learn(128)
    model.save(tmp_path / "agent")
    loaded = PPOElmur.load(tmp_path / "agent", env=venv)
    assert loaded.policy.elmur_config == model.policy.elmur_config
    obs = venv.reset()
    state_a = state_b = None
    starts = np.ones(2, dtype=bool)
    for _ in range(20):
        actions_a, state_a = model.predict(obs, state=state_a, episode_start=starts, deterministic=True)
        actions_b, state_b = loaded.predict(obs, state=state_b, episode_start=starts, deterministic=True)
        assert np.array_equal(actions_a, actions_b)
        obs, _, starts, _ = venv.step(actions_a)
    # a single (non-vectorised) observation works too
    single_action, _ = loaded.predict(obs[0], deterministic=True)
    assert np.shape(single_action) == ()
    mean_reward, _ = evaluate_policy(loaded, venv, n_eval_episodes=4)
    assert mean_reward > 0
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128 + 64


def test_callbacks_vecnormalize_tensorboard_progress_bar(tmp_path):
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=5), training=False)
    callbacks = [
        EvalCallback(eval_env, eval_freq=64, n_eval_episodes=1, log_path=str(tmp_path / "eval")),
        CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt"), save_vecnormalize=True),
    ]
    model = PPOElmur(
        "MlpElmurPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0,
        tensorboard_log=str(tmp_path / "tb"), policy_kwargs=SMALL,
    )  # fmt: skip
    model.learn(256, callback=callbacks, progress_bar=True)
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    assert any(p.suffix == ".zip" for p in (tmp_path / "ckpt").iterdir())
    events = list((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    for tag in ("train/approx_kl", "train/grad_norm", "elmur/slots_filled", "elmur/mean_slot_age", "elmur/read_entropy"):
        assert tag in tags


def test_same_seed_same_first_update():
    def first_update() -> list[th.Tensor]:
        venv = make_vec_env("CartPole-v1", n_envs=2, seed=3)
        model = PPOElmur("MlpElmurPolicy", venv, n_steps=32, batch_size=32, n_epochs=2, seed=3, policy_kwargs=SMALL)
        model.learn(64)
        return [p.detach().clone() for p in model.policy.parameters()]

    for a, b in zip(first_update(), first_update()):
        assert th.equal(a, b)


class _SpaceEnv(gym.Env):
    """A short-episode env with a given observation and action space (random observations)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype).reshape(self.action_space.shape))
        self.t += 1
        return self.observation_space.sample(), float(np.sum(action)), self.t >= 9, False, {}


@pytest.mark.parametrize(
    "policy,observation_space,action_space",
    [
        ("MlpElmurPolicy", spaces.Box(-1, 1, (3,)), spaces.Discrete(3)),
        ("MlpElmurPolicy", spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3])),
        ("MlpElmurPolicy", spaces.Discrete(4), spaces.MultiBinary(3)),
        ("MlpElmurPolicy", spaces.MultiDiscrete([3, 2]), spaces.Box(-2, 2, (2,))),
        ("MlpElmurPolicy", spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2, 2))),  # actions keep their shape
        ("MultiInputElmurPolicy", spaces.Dict(a=spaces.Box(-1, 1, (2,)), b=spaces.Discrete(3)), spaces.Discrete(2)),
        ("CnnElmurPolicy", spaces.Box(0, 255, (36, 36, 1), np.uint8), spaces.Discrete(2)),
    ],
)
def test_spaces(policy, observation_space, action_space):
    venv = make_vec_env(lambda: _SpaceEnv(observation_space, action_space), n_envs=2, seed=0)
    # learning_rate=0 so that rollouts after the first (which begin mid-segment) are also exact
    model = PPOElmur(policy, venv, n_steps=12, batch_size=16, n_epochs=1, learning_rate=0.0, seed=0, policy_kwargs=SMALL)
    deviations = _record_train_inputs(model)
    model.learn(48)
    assert max(d[0] for d in deviations) < 1e-5
    evaluate_policy(model, venv, n_eval_episodes=2)


# --------------------------------------------------------------------------------------------
# clear errors at construction


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(policy_kwargs=dict(d_model=30, n_heads=4)), "d_model (30) must be divisible by n_heads (4)"),
        (dict(policy_kwargs=dict(segment_len=0)), "segment_len must be an integer >= 1"),
        (dict(policy_kwargs=dict(memory_slots=0)), "memory_slots must be an integer >= 1"),
        (dict(policy_kwargs=dict(lru_blend=0.0)), r"lru_blend must lie in (0, 1]"),
        (dict(policy_kwargs=dict(lru_blend=1.5)), r"lru_blend must lie in (0, 1]"),
        (dict(bptt_segments=0), "bptt_segments must be an integer >= 1"),
        (dict(batch_size=8, policy_kwargs=dict(segment_len=16)), "batch_size (8) cannot hold one segment"),
        (dict(policy_kwargs=dict(cache_len=-1)), "cache_len must be an integer >= 0"),
        (
            dict(policy_kwargs=dict(shared_core=True, share_features_extractor=False)),
            "share_features_extractor=False needs a separate critic core",
        ),
        (dict(policy_kwargs=dict(detach_critic=True)), "detach_critic=True only applies to a shared core"),
        (
            dict(policy_kwargs=dict(shared_core=True, critic_core_kwargs=dict(n_layers=1))),
            "critic_core_kwargs configures the critic's own core: it needs shared_core=False",
        ),
        (
            dict(policy_kwargs=dict(segment_len=8, critic_core_kwargs=dict(segment_len=4))),
            "critic_core_kwargs cannot change segment_len (4 vs the actor's 8)",
        ),
        (dict(policy_kwargs=dict(critic_core_kwargs=dict(d_model=30))), "d_model (30) must be divisible by n_heads (4)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    venv = make_vec_env("CartPole-v1", n_envs=1)
    with pytest.raises(ValueError) as error:
        PPOElmur("MlpElmurPolicy", venv, **kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_elmur_option_is_named():
    with pytest.raises(TypeError, match=r"unknown ELMUR policy argument\(s\) \['segment_length'\]"):
        PPOElmur("MlpElmurPolicy", make_vec_env("CartPole-v1", n_envs=1), policy_kwargs=dict(segment_length=8))


def test_unknown_critic_core_option_is_named():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['layers'\] in critic_core_kwargs"):
        PPOElmur("MlpElmurPolicy", make_vec_env("CartPole-v1", n_envs=1), policy_kwargs=dict(critic_core_kwargs=dict(layers=1)))


def test_a_smaller_critic_core_is_built_saved_and_loaded_as_configured(tmp_path):
    critic = dict(d_model=8, n_layers=1, n_heads=2)
    model = PPOElmur("MlpElmurPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=8, batch_size=8, seed=0,
                     policy_kwargs=dict(SMALL, critic_core_kwargs=critic))  # fmt: skip
    policy = model.policy
    assert policy.critic_config.d_model == 8 and len(policy.core_critic.layers) == 1
    assert policy.critic_config.d_ff == 32 and policy.critic_config.memory_slots == SMALL["memory_slots"]  # own width's default
    assert policy.elmur_config.d_model == 16 and len(policy.core_actor.layers) == 2  # the actor as given
    assert policy.mlp_extractor.value_net[0].in_features == 8 and policy.mlp_extractor.policy_net[0].in_features == 16
    model.learn(16)
    model.save(tmp_path / "m.zip")
    loaded = PPOElmur.load(tmp_path / "m.zip")
    assert loaded.policy.critic_config == policy.critic_config and loaded.policy.elmur_config == policy.elmur_config
    obs = model.env.reset()
    actions = model.predict(obs, deterministic=True)[0]
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def test_the_default_critic_core_is_one_layer_at_half_width():
    venv = make_vec_env("CartPole-v1", n_envs=1)
    policy = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=SMALL).policy
    assert policy.critic_config.d_model == 8 and policy.critic_config.n_layers == 1 and policy.critic_config.d_ff == 32
    assert policy.critic_config.memory_slots == SMALL["memory_slots"] and policy.critic_config.n_heads == SMALL["n_heads"]
    # {} copies the actor's core, as the default did before
    copy = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=dict(SMALL, critic_core_kwargs={})).policy
    assert copy.critic_config == copy.elmur_config
    # a half width that would not split into n_heads heads keeps the actor's width
    odd = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=dict(SMALL, d_model=12, n_heads=4)).policy
    assert odd.critic_config.d_model == 12 and odd.critic_config.n_layers == 1
    assert PPOElmur("MlpElmurPolicy", venv, policy_kwargs=dict(SMALL, shared_core=True)).policy.critic_config is None


def test_models_saved_before_critic_core_kwargs_load_with_a_full_critic():
    # Saved at 5b62db5, before critic_core_kwargs existed: its critic core copies the actor's.
    path = Path(__file__).parents[1] / "docs/results/tmaze_defaults/tmaze-30/runs/tmaze-30__ppo-elmur__s2/final_model.zip"
    policy = PPOElmur.load(path).policy
    assert policy.critic_config == policy.elmur_config


def test_gsde_as_in_recurrent_ppo():
    # RecurrentPPO's gSDE arguments, same meaning; lr=0 keeps the update exact under the noise resets.
    venv = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = PPOElmur(
        "MlpElmurPolicy", venv, use_sde=True, sde_sample_freq=4, n_steps=18, batch_size=16, n_epochs=2,
        learning_rate=0.0, seed=0, policy_kwargs=SMALL,
    )  # fmt: skip
    deviations = _record_train_inputs(model)
    model.learn(18 * 2 * 3)
    assert max(d[0] for d in deviations) < 1e-5
    assert model.logger.name_to_value["train/approx_kl"] < 1e-9
    assert model.policy.use_sde and model.sde_sample_freq == 4
    # the noise really is state-dependent and resampled: two rollouts' actions differ for the same obs
    obs = np.zeros((2, 3), dtype=np.float32)
    model.policy.reset_noise(2)
    first, _ = model.predict(obs)
    model.policy.reset_noise(2)
    second, _ = model.predict(obs)
    assert not np.allclose(first, second)


def test_separate_critic_core_may_have_its_own_extractor():
    # the contradictory shared-core case is refused in test_invalid_configuration
    venv = make_vec_env("CartPole-v1", n_envs=1)
    model = PPOElmur("MlpElmurPolicy", venv, policy_kwargs=dict(SMALL, share_features_extractor=False))
    assert model.policy.core_critic is not None and model.policy.vf_features_extractor is not model.policy.pi_features_extractor


def test_unsupported_observation_space_names_the_fix():
    env = _SpaceEnv(spaces.Tuple((spaces.Discrete(2), spaces.Discrete(4))), spaces.Discrete(2))
    with pytest.raises(ValueError, match="FlattenObservation"):
        PPOElmur("MlpElmurPolicy", make_vec_env(lambda: env, n_envs=1))


# --------------------------------------------------------------------------------------------
# it really remembers


def _success_rate(model, n_episodes: int = 200, wipe_memory_at: int | None = None) -> float:
    """Success on CueRecallEnv; optionally wipe the memory (keeping the episode time) at one step."""
    env = CueRecallEnv(length=5)
    successes = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        state, start, done = None, np.array([True]), False
        while not done:
            if wipe_memory_at is not None and env.t == wipe_memory_at and isinstance(model, PPOElmur):
                policy = model.policy

                def wiped(core, core_state):
                    return core.with_memory(core_state, core.initial_segment_start(1, model.device).memory)

                critic = None if state.vf is None else wiped(policy.core_critic, state.vf)
                state = ElmurStates(wiped(policy.core_actor, state.pi), critic)
            action, state = model.predict(obs[None], state=state, episode_start=start, deterministic=True)
            start = np.array([False])
            obs, _, done, _, info = env.step(int(action[0]))
        successes.append(info["is_success"])
    return float(np.mean(successes))


def test_it_remembers_across_segments():
    # The cue is shown at step 0 (segment 0) and must be acted on at step 4 (segment 2): the
    # attention window (2 steps) cannot see it, only the layer memory can carry it.
    venv = make_vec_env(CueRecallEnv, n_envs=16, seed=0, env_kwargs=dict(length=5))
    common = dict(n_steps=20, batch_size=80, n_epochs=4, learning_rate=1e-3, seed=1)
    model = PPOElmur(
        "MlpElmurPolicy", venv, bptt_segments=3, **common,
        policy_kwargs=dict(d_model=32, n_layers=1, n_heads=2, segment_len=2, memory_slots=4, net_arch=[32]),
    )  # fmt: skip
    model.learn(5120)
    assert _success_rate(model) >= 0.9
    # Memory is the reason: wiping it just before the decision brings the agent back to chance.
    assert _success_rate(model, wipe_memory_at=4) <= 0.7
    memoryless = PPO("MlpPolicy", venv, **common).learn(5120)
    assert _success_rate(memoryless) <= 0.7


def test_truncation_bootstraps_with_the_pre_reset_state():
    from stable_baselines3.common.callbacks import BaseCallback

    class KeepInfos(BaseCallback):
        def _on_step(self) -> bool:
            self.infos = getattr(self, "infos", []) + [self.locals["infos"][0]]
            return True

    venv = make_vec_env("CartPole-v1", n_envs=1, seed=0, env_kwargs=dict(max_episode_steps=6))
    model = PPOElmur("MlpElmurPolicy", venv, n_steps=18, batch_size=18, n_epochs=1, learning_rate=0.0, seed=0,
                     gamma=0.9, policy_kwargs=dict(SMALL, memory_init_std=0.0))  # fmt: skip
    keep = KeepInfos()
    model.learn(18, callback=keep)
    buffer, policy = model.rollout_buffer, model.policy
    truncated = [t for t, info in enumerate(keep.infos) if info.get("TimeLimit.truncated")]
    assert truncated, "CartPole should survive 6 random steps at least once in 18"
    end = truncated[0]
    begin = max(t for t in range(end + 1) if buffer.episode_starts[t, 0])
    state = policy.initial_state(1)
    with th.no_grad():
        for t in range(begin, end + 1):
            _, _, _, state = policy(th.as_tensor(buffer.observations[t]), state, th.tensor([t == begin]))
        terminal_obs = th.as_tensor(keep.infos[end]["terminal_observation"][None])
        expected = 1.0 + 0.9 * policy.predict_values(terminal_obs, state, th.tensor([False])).item()
    assert buffer.rewards[end, 0] == pytest.approx(expected, abs=1e-5)


def test_split_into_chains():
    from elmur_sb3.buffer import split_into_chains

    # a segment that began before (times 2, 3 are its prefix), an episode of 7 steps, a new episode
    times = np.array([2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 0, 1])
    assert split_into_chains(times, segment_len=2, max_segments=2) == [
        [(0, 2), (2, 4)], [(4, 6), (6, 8)], [(8, 10), (10, 12)], [(12, 13)], [(13, 15)]
    ]
    assert split_into_chains(times[2:], segment_len=4, max_segments=3) == [[(0, 4), (4, 6)], [(6, 10), (10, 11)], [(11, 13)]]
