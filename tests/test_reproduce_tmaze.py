"""benchmarks/reproduce_tmaze.py: what counts as reaching a corridor length, and its interval."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_length_counts_only_after_every_shorter_one():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reproduce_tmaze import reached, wilson

    results = [{"length": 30, "success_rate": 1.0}, {"length": 100, "success_rate": 1.0}, {"length": 1000, "success_rate": 0.97}]
    assert [reached(results, n) for n in (30, 100, 1000, 10_000)] == [True, True, False, False]
    assert reached(results[:2], 10_000) is None  # not evaluated yet, nothing failed before it
    assert wilson(5, 5)[1] == 1.0 and 0.5 < wilson(5, 5)[0] < 0.6  # 5/5: [0.57, 1.00]
    low, high = wilson(4, 5)
    assert low < 0.8 < high and wilson(0, 5)[0] == 0.0


class _Scripted:
    """A T-Maze policy from envs.tmaze.optimal_action, with the cue it acts on fixed or read at step 0."""

    def __init__(self, always_up: bool):
        self.always_up = always_up

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        import numpy as np

        from envs.tmaze import optimal_action

        cue = np.where(episode_start, obs[:, 0] > 0.5, state) if state is not None else obs[:, 0] > 0.5
        return optimal_action(obs, np.ones_like(cue) if self.always_up else cue), cue


def test_length_evaluation_reports_success_per_cue():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from eval_tmaze_lengths import evaluate

    remembers = evaluate(_Scripted(always_up=False), length=20, episodes=16, seed=3)
    assert remembers["success_rate"] == remembers["success_cue_up"] == remembers["success_cue_down"] == 1.0
    lost = evaluate(_Scripted(always_up=True), length=20, episodes=16, seed=3)
    assert lost["success_cue_up"] == 1.0 and lost["success_cue_down"] == 0.0 and 0.0 < lost["success_rate"] < 1.0


def test_cue_retention_reads_each_layers_memory_at_every_segment_end():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from cue_retention import cue_separation

    from elmur_sb3 import PPOElmur
    from envs import make_vec_env

    venv = make_vec_env("tmaze-20", n_envs=2, seed=0)
    model = PPOElmur("MlpElmurPolicy", venv, n_steps=8, seed=0,
                     policy_kwargs=dict(d_model=16, n_layers=3, n_heads=2, segment_len=4, memory_slots=2))  # fmt: skip
    separation = cue_separation(model, length=20)
    assert sorted(separation) == [1, 2, 3, 4, 5] and all(len(v) == 3 for v in separation.values())
    # the cue is written into every layer's memory at the first segment's end, so the two episodes differ
    assert all(x > 1e-4 for x in separation[1])


def test_the_pipeline_evaluates_the_tmaze30_model_as_well_as_the_curriculum_models():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reproduce_tmaze import CHOICE_LABELS, CHOICES, model_path

    out = Path("/out")
    assert model_path(out, "ppo-elmur", 4, "tmaze30") == out / "tmaze-30/runs/tmaze-30__ppo-elmur__s4/final_model.zip"
    assert model_path(out, "ppo-lstm", 0, "selected") == out / "curriculum/tmaze-100__ppo-lstm__s0/best_model.zip"
    assert model_path(out, "ppo-lstm", 0, "final") == out / "curriculum/tmaze-100__ppo-lstm__s0/final_model.zip"
    assert set(CHOICE_LABELS) == set(CHOICES)


def test_a_missing_model_stays_pending_instead_of_stopping_the_pipeline(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reproduce_tmaze import evaluate_lengths, report

    evaluate_lengths(tmp_path, "ppo-elmur", 0, "selected", episodes=4, max_length=1000)
    assert "stays pending" in capsys.readouterr().out and not (tmp_path / "lengths").exists()
    assert "0/0 [0.00, 1.00] (1 pending)" in report(tmp_path, ["ppo-elmur"], 1, 1000)


def test_length_evaluation_reports_the_doubt_at_the_junction_for_both_algorithms():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    import torch as th
    from eval_tmaze_lengths import evaluate
    from sb3_contrib import RecurrentPPO

    from elmur_sb3 import PPOElmur
    from envs import make_vec_env

    venv = make_vec_env("tmaze-6", n_envs=2, seed=0)
    elmur = PPOElmur("MlpElmurPolicy", venv, seed=0, policy_kwargs=dict(d_model=16, n_heads=2, segment_len=4, memory_slots=2))
    lstm = RecurrentPPO("MlpLstmPolicy", venv, seed=0, policy_kwargs=dict(lstm_hidden_size=8))
    for model in (elmur, lstm):
        # logits (2, 0, 0, 0) whatever the input: it walks right to the junction and doubts "right" there
        with th.no_grad():
            model.policy.action_net.weight.zero_()
            model.policy.action_net.bias.copy_(th.tensor([2.0, 0.0, 0.0, 0.0]))
        doubt = 1 - np.exp(2) / (np.exp(2) + 3)
        assert abs(evaluate(model, length=6, episodes=8, seed=1)["junction_doubt"] - doubt) < 1e-6
    assert evaluate(_Scripted(always_up=False), length=6, episodes=4, seed=1)["junction_doubt"] is None
