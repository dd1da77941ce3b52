"""train.py end to end, as a user runs it: subprocesses at tiny budgets on real envs and real SB3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "train.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Tiny but complete: 2 PPO updates, 2 evaluations, 2 periodic checkpoints.
TINY = [
    "--timesteps", "512", "--n-envs", "2", "--eval-freq", "256", "--eval-episodes", "2",
    "--hp", "n_steps=128", "batch_size=64", "n_epochs=1", "checkpoint_freq=256", "n_eval_envs=2",
]  # fmt: skip
ALGOS = ["ppo", "ppo-lstm", "ppo-elmur"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def popen(*args: str, ignore_sigint: bool = False) -> subprocess.Popen:
    # ignore_sigint: start the process the way a shell starts a background job (`cmd &`).
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen(
        [sys.executable, TRAIN, *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=preexec,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def only_run_dir(out: Path) -> Path:
    dirs = [d for d in out.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("algo", ALGOS)
def test_train_eval_only_resume(algo: str, tmp_path: Path) -> None:
    proc = run("--env", "popgym-RepeatPrevious", "--algo", algo, "--seed", "3", "--out", str(tmp_path), "--no-progress-bar", *TINY)
    assert_clean(proc)
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith(f"popgym-RepeatPreviousEasy-v0__{algo}__s3__")
    for name in ("config.yml", "summary.json", "evaluations.npz", "final_model.zip", "best_model.zip"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.zip")) == ["model_256_steps.zip", "model_512_steps.zip"]
    assert sorted(p.name for p in (run_dir / "monitor").glob("*.monitor.csv")) == ["0.monitor.csv", "1.monitor.csv"]
    assert list((run_dir / "tb").glob("*/events.out.tfevents.*"))

    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["algo"] == algo and config["env"] == "popgym-RepeatPreviousEasy-v0" and config["seed"] == 3
    assert config["hyperparams"]["n_steps"] == 128 and config["hyperparams"]["n_timesteps"] == 512
    assert config["hyperparams"]["policy"].startswith("Mlp")
    assert {"torch", "stable-baselines3", "sb3-contrib", "gymnasium", "python"} <= set(config["versions"])

    summary = json.loads((run_dir / "summary.json").read_text())
    evals = np.load(run_dir / "evaluations.npz")
    assert list(evals["timesteps"]) == [256, 512]
    assert summary["status"] == "finished" and summary["timesteps"] == 512 and summary["metric"] == "mmer"
    assert summary["score"] == pytest.approx(evals["results"].mean(axis=1).max())
    assert -1.0 <= summary["score"] <= 1.0 and summary["wall_time_s"] > 0 and summary["env_steps_per_s"] > 0
    assert "MMER" in proc.stdout and "status: finished" in proc.stdout  # the closing summary

    # --eval-only (settings from the run's config.yml) and --resume run side by side to save time;
    # eval-only reads a checkpoint the resumed session never rewrites.
    monitor_rows = len((run_dir / "monitor" / "0.monitor.csv").read_text().splitlines())
    evaluating = popen("--eval-only", str(run_dir / "checkpoints" / "model_512_steps.zip"), "--eval-episodes", "3")
    # --resume with a larger budget: the step count, evaluations, monitor files and sessions continue
    proc = run("--resume", str(run_dir), "--timesteps", "1024", "--no-progress-bar")
    assert_clean(proc)
    assert_clean(finish(evaluating))
    (result_file,) = (run_dir / "eval").glob("eval__model_512_steps__*.json")
    result = json.loads(result_file.read_text())
    assert result["episodes"] == 3 and result["algo"] == algo and len(result["returns"]) == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == 1024
    assert [s["timesteps_start"] for s in summary["sessions"]] == [0, 512]
    assert list(np.load(run_dir / "evaluations.npz")["timesteps"]) == [256, 512, 768, 1024]
    assert len((run_dir / "monitor" / "0.monitor.csv").read_text().splitlines()) > monitor_rows
    assert not list((run_dir / "monitor").glob("*.prev"))
    assert len(list((run_dir / "tb").iterdir())) == 1  # the same TensorBoard run, continued


@pytest.mark.parametrize("sig,ignore_sigint", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)])
def test_interrupt_saves_checkpoint_and_summary(sig: int, ignore_sigint: bool, tmp_path: Path) -> None:
    args = ["--env", "popgym-RepeatPrevious", "--algo", "ppo", "--out", str(tmp_path), "--no-progress-bar",
            "--timesteps", "10000000", "--n-envs", "2", "--eval-freq", "256", "--eval-episodes", "2",
            "--hp", "n_steps=64", "batch_size=64", "n_epochs=1", "n_eval_envs=2"]  # fmt: skip
    proc = popen(*args, ignore_sigint=ignore_sigint)
    deadline = time.time() + 90
    while not list(tmp_path.glob("*/evaluations.npz")):  # training is under way
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stdout + stderr
    assert "Traceback" not in stderr
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "status: interrupted" in stdout
    steps = summary["timesteps"]
    assert (run_dir / "checkpoints" / f"model_{steps}_steps.zip").is_file()
    assert not (run_dir / "final_model.zip").exists()
    if sig == signal.SIGTERM or ignore_sigint:
        return  # resuming is the same for every signal; once is enough

    resumed = run("--resume", str(run_dir), "--timesteps", str(steps + 128), "--no-progress-bar")
    assert_clean(resumed)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] >= steps + 128
    assert [s["status"] for s in summary["sessions"]] == ["interrupted", "finished"]


def test_tmaze_success_rate_and_long_eval_env(tmp_path: Path) -> None:
    """T-Maze reports success rate; --eval-only evaluates on a far longer corridor than training."""
    proc = run("--env", "tmaze-10", "--algo", "ppo-lstm", "--out", str(tmp_path), "--no-progress-bar", *TINY)
    assert_clean(proc)
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metric"] == "success_rate" and 0.0 <= summary["score"] <= 1.0
    assert "successes" in np.load(run_dir / "evaluations.npz")
    proc = run("--eval-only", str(run_dir / "final_model.zip"), "--eval-env", "tmaze-1000", "--eval-episodes", "4")
    assert_clean(proc)
    (result_file,) = (run_dir / "eval").glob("*tmaze-1000__*.json")
    result = json.loads(result_file.read_text())
    assert result["eval_env"] == "tmaze-1000" and result["success_rate"] is not None and min(result["lengths"]) >= 1


def test_trained_agent_starts_a_curriculum_step(tmp_path: Path) -> None:
    """--trained-agent: a tmaze-20 run starts from a tmaze-10 model's weights; mismatches fail in one line."""
    first = tmp_path / "first"
    assert_clean(run("--env", "tmaze-10", "--algo", "ppo-elmur", "--out", str(first), "--no-progress-bar", *TINY))
    model_zip = only_run_dir(first) / "final_model.zip"

    # learning_rate=0: the weights the second run ends with are exactly those it started from
    # (and seed 1 would initialise other weights, so equality means they came from the file).
    second, wrong_net, wrong_algo = tmp_path / "second", tmp_path / "wrong_net", tmp_path / "wrong_algo"
    procs = [
        popen("--env", "tmaze-20", "--algo", "ppo-elmur", "--seed", "1", "--trained-agent", str(model_zip),
              "--out", str(second), "--no-progress-bar", *TINY, "learning_rate=0", "bptt_segments=3"),
        popen("--env", "tmaze-20", "--algo", "ppo-elmur", "--trained-agent", str(model_zip), "--out", str(wrong_net),
              "--hp", "policy_kwargs.d_model=32"),
        popen("--env", "tmaze-20", "--algo", "ppo-lstm", "-i", str(model_zip), "--out", str(wrong_algo)),
    ]  # fmt: skip
    done = [finish(proc) for proc in procs]
    assert_clean(done[0])
    for proc, needle in zip(done[1:], ["does not match this run's policy", "saved by ppo-elmur"]):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not wrong_net.exists() or not any(wrong_net.rglob("*.yml"))
    assert not wrong_algo.exists()

    from elmur_sb3 import PPOElmur

    run_dir = only_run_dir(second)
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["trained_agent"] == str(model_zip.resolve()) and config["env"] == "tmaze-20"
    assert config["hyperparams"]["bptt_segments"] == 3
    before = PPOElmur.load(model_zip, device="cpu").policy.state_dict()
    after = PPOElmur.load(run_dir / "final_model.zip", device="cpu").policy.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert th.equal(before[key], after[key]), key


def test_compare_writes_table_plot_and_summaries(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = run(
        "compare", "--env", "popgym-RepeatPrevious", "--algos", "ppo", "ppo-lstm", "--seeds", "2", "--jobs", "2",
        "--out", str(out), "--timesteps", "256", "--n-envs", "2", "--eval-freq", "128", "--eval-episodes", "2",
        "--hp", "n_steps=64", "batch_size=64", "n_epochs=1", "n_eval_envs=2", "ppo-lstm:policy_kwargs.lstm_hidden_size=16",
        timeout=240,
    )  # fmt: skip
    assert_clean(proc)
    table = (out / "results.md").read_text()
    assert "95% CI" in table and "| ppo |" in table and "| ppo-lstm |" in table and "2/2" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "summaries").glob("*.json")) == ["ppo-lstm__s0.json", "ppo-lstm__s1.json", "ppo__s0.json", "ppo__s1.json"]
    results = json.loads((out / "results.json").read_text())
    assert [r["finished"] for r in results["rows"]] == [2, 2]
    lstm_config = yaml.safe_load((out / "runs" / "popgym-RepeatPreviousEasy-v0__ppo-lstm__s0" / "config.yml").read_text())
    assert lstm_config["hyperparams"]["policy_kwargs"]["lstm_hidden_size"] == 16 and lstm_config["seed"] == 0
    # Rerun: every run is skipped and the report rewritten; the recorded wall time keeps the training's.
    assert_clean(run(*proc.args[2:], timeout=240))
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["wall_time_s"] >= results["wall_time_s"] and rerun["rows"] == results["rows"]


# (args, text the one-line message must contain)
USER_ERRORS = [
    (["--env", "popgym-RepeatPrevios", "--algo", "ppo"], "popgym-RepeatPrevious"),
    (["--env", "tmaz-30", "--algo", "ppo"], "tmaze"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo-lstn"], "ppo-lstm"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo", "--hp", "n_stepz=64"], "n_steps"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo-lstm", "--hp", "policy_kwargs.lstm_size=64"], "lstm_hidden_size"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo-elmur", "--hp", "policy_kwargs.segment_length=8"], "segment_len"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo", "--hp", "n_steps"], "key=value"),
    (["--resume", "/nonexistent/run"], "not a run directory"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo", "--hp", "learning_rate=abc"], "lin_<initial value>"),
    (["--eval-only", "/nonexistent/model.zip"], "no such model file"),
    (["--eval-only", str(REPO / "pyproject.toml"), "--algo", "ppo-elmur", "--env", "popgym-RepeatPrevious"], "not an SB3 model zip"),
    (["compare", "--env", "popgym-RepeatPrevious", "--algos", "ppo", "lstm"], "ppo-lstm"),
    (["--env", "popgym-RepeatPrevious", "--algo", "ppo-elmur", "--hp", "policy_kwargs.cache_len=-3"], "cache_len must be"),
]


def test_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    # All at once: each process pays the torch import, but they overlap.
    procs = [(args, needle, popen(*args, "--out", str(tmp_path / str(i)))) for i, (args, needle) in enumerate(USER_ERRORS)]
    for args, needle, proc in procs:
        done = finish(proc)
        stdout, stderr = done.stdout, done.stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (args, stdout, stderr)
        assert "Traceback" not in stderr, (args, stderr)
        assert len(lines) == 1 and lines[0].startswith("train.py: error:") and needle in lines[0], (args, stderr)
    # nothing was left behind by the failed runs
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
