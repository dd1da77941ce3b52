"""scripts/publish_runs.py on a real run directory written by train.py (a tiny PPO run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stable_baselines3 import PPO

REPO = Path(__file__).resolve().parent.parent
PUBLISH = str(REPO / "scripts" / "publish_runs.py")


def _train(out: Path) -> Path:
    command = [
        sys.executable, str(REPO / "train.py"), "--env", "popgym-RepeatPrevious", "--algo", "ppo", "--out", str(out),
        "--timesteps", "512", "--n-envs", "2", "--eval-freq", "256", "--eval-episodes", "2", "--no-progress-bar",
        "--hp", "n_steps=128", "batch_size=64", "n_epochs=1", "checkpoint_freq=256", "n_eval_envs=2",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    return run_dir


def test_publish_keeps_the_final_model_and_makes_paths_relative(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    run_dir = _train(root / "docs" / "results" / "probe")
    grid_json = root / "docs" / "results" / "probe_summary.json"  # a grid-level copy, as compare's summaries/ hold
    grid_json.write_text((run_dir / "summary.json").read_text())
    results_json = root / "docs" / "results" / "probe_results.json"  # compare's results.json: runs named inside
    log = root / "docs" / "results" / "logs" / "ppo__s0.log"
    results_json.write_text(json.dumps({"rows": [], "runs": [{"algo": "ppo", "run_dir": str(run_dir), "log": str(log)}]}))
    assert (run_dir / "best_model.zip").exists() and any((run_dir / "checkpoints").iterdir())

    dry = subprocess.run([sys.executable, PUBLISH, "--dry-run", "--root", str(root), str(root / "docs")], capture_output=True, text=True)
    assert dry.returncode == 0 and "remove" in dry.stdout
    assert (run_dir / "best_model.zip").exists(), "--dry-run changed something"

    proc = subprocess.run([sys.executable, PUBLISH, "--root", str(root), str(root / "docs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / "best_model.zip").exists() and not (run_dir / "checkpoints").exists()
    final = str((run_dir / "final_model.zip").relative_to(root))
    for path in (run_dir / "summary.json", grid_json):
        summary = json.loads(path.read_text())
        assert summary["final_model"] == summary["last_checkpoint"] == final, path
        assert summary["run_dir"] == str(run_dir.relative_to(root))
    (entry,) = json.loads(results_json.read_text())["runs"]
    assert entry["run_dir"] == str(run_dir.relative_to(root)) and entry["log"] == str(log.relative_to(root))
    PPO.load(root / final, device="cpu")  # what the kept path names loads

    again = subprocess.run([sys.executable, PUBLISH, "--root", str(root), str(root / "docs")], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == "", "a second pass must find nothing to do"


def test_publish_refuses_a_folder_outside_the_checkout(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, PUBLISH, "--root", str(tmp_path / "a"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not a folder inside" in proc.stderr


def test_publish_finds_runs_trained_outside_the_checkout(tmp_path: Path) -> None:
    """Runs trained in another folder and copied in: the grid-level copies name the old place, and must
    end up naming the run in ``<grid>/runs/`` (not a folder beside the summaries)."""
    outside = _train(tmp_path / "elsewhere" / "grid" / "runs")
    root = tmp_path / "checkout"
    grid = root / "docs" / "results" / "grid"
    run_dir = grid / "runs" / outside.name
    run_dir.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(outside), str(run_dir)], check=True)
    (grid / "summaries").mkdir()
    copy = grid / "summaries" / "ppo__s0.json"
    copy.write_text((outside / "summary.json").read_text())
    assert str(tmp_path / "elsewhere") in json.loads(copy.read_text())["run_dir"]

    proc = subprocess.run([sys.executable, PUBLISH, "--root", str(root), str(root / "docs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    final = str((run_dir / "final_model.zip").relative_to(root))
    for path in (run_dir / "summary.json", copy):
        summary = json.loads(path.read_text())
        assert summary["final_model"] == summary["last_checkpoint"] == final, path
        assert summary["run_dir"] == str(run_dir.relative_to(root)), path



def test_a_slim_model_acts_as_before_and_trains_on(tmp_path: Path) -> None:
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env

    sys.path.insert(0, str(REPO / "scripts"))
    from publish_runs import slim_model

    from elmur_sb3 import PPOElmur

    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOElmur("MlpElmurPolicy", venv, n_steps=16, batch_size=16, seed=0,
                     policy_kwargs=dict(d_model=16, n_heads=2, segment_len=4, memory_slots=2))  # fmt: skip
    model.learn(64)  # Adam has state now
    full, slim = tmp_path / "full.zip", tmp_path / "slim.zip"
    model.save(full)
    model.save(slim)
    assert slim_model(slim) and not slim_model(slim)  # a second pass has nothing to drop
    assert slim.stat().st_size < 0.6 * full.stat().st_size
    obs = venv.reset()
    loaded_full, loaded_slim = PPOElmur.load(full, device="cpu"), PPOElmur.load(slim, device="cpu")
    for a, b in zip(loaded_full.policy.state_dict().values(), loaded_slim.policy.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    assert np.array_equal(loaded_full.predict(obs, deterministic=True)[0], loaded_slim.predict(obs, deterministic=True)[0])
    assert not loaded_slim.policy.optimizer.state  # a fresh Adam ...
    loaded_slim.set_env(venv)
    loaded_slim.learn(32)  # ... that trains on
    assert loaded_slim.policy.optimizer.state
