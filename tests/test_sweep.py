"""Sweeps beyond one machine, as a user runs them: ``compare --backend ray`` on a local Ray and on two simulated nodes, a killed worker, ``tune`` and ``--preset``, suites, and the rliable aggregates."""

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
import yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "train.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Tiny runs: 2 envs x 128 steps per update, evaluations every 256 env steps, a checkpoint at each.
TINY = [
    "--n-envs", "2", "--eval-freq", "256", "--eval-episodes", "4",
    "--hp", "n_steps=128", "batch_size=64", "n_epochs=1", "checkpoint_freq=256", "n_eval_envs=2",
]  # fmt: skip
ENVS = ["popgym-RepeatPreviousEasy-v0", "popgym-RepeatFirstEasy-v0"]

pytest.importorskip("ray", reason="the sweep extra: pip install -e .[sweep]")


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def without_ray_state_sync_errors(stderr: str) -> str:
    """stderr without the tracebacks Ray Tune logs, and survives, when a background copy of its
    experiment state misses a temporary file it renamed meanwhile (``ERROR experiment_state.py ...
    Saving experiment state ... failed``; seen once in CI, the run then finished normally)."""
    kept, skipping = [], False
    for line in stderr.splitlines():
        if "ERROR experiment_state.py" in line and "Saving experiment state" in line:
            skipping = True
        elif skipping and line[:4].isdigit():  # the next timestamped log line ends the logged traceback
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in without_ray_state_sync_errors(proc.stderr), proc.stderr[-4000:]


def test_only_rays_survived_state_sync_tracebacks_are_tolerated() -> None:
    logged = "2026 INFO a\n2026 ERROR experiment_state.py:176 -- Saving experiment state to x failed:\nTraceback (most recent call last):\n  File y\n2026 INFO b"
    assert "Traceback" not in without_ray_state_sync_errors(logged)
    assert "Traceback" in without_ray_state_sync_errors("2026 INFO a\nTraceback (most recent call last):\n  File z")


def attempts(out: Path, cell: str) -> list[dict]:
    path = out / "attempts" / f"{cell}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_ray_grid_two_envs_same_tables_as_process_backend(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = run(
        "compare", "--backend", "ray", "--env", "popgym-RepeatPrevious", "popgym-RepeatFirst", "--algos", "ppo", "ppo-lstm",
        "--seeds", "1", "--jobs", "2", "--timesteps", "256", "--out", str(out), "--bootstrap-reps", "500", *TINY,
    )  # fmt: skip
    assert_ok(proc)
    for env in ENVS:
        env_dir = out / env
        for algo in ("ppo", "ppo-lstm"):
            summary = json.loads((env_dir / "runs" / f"{env}__{algo}__s0" / "summary.json").read_text())
            assert summary["status"] == "finished" and summary["timesteps"] == 256
            assert (env_dir / "summaries" / f"{algo}__s0.json").exists() and (env_dir / "logs" / f"{algo}__s0.log").exists()
            # The trial reported its evaluations to Tune as they happened.
            rows = [json.loads(line) for p in (out / "ray").glob(f"compare-*/{env}__{algo}__s0/result.json") for line in p.read_text().splitlines()]
            assert [r["timesteps"] for r in rows if "eval_return" in r] == [256]
        assert (env_dir / "learning_curves.png").exists()
    ray_tables = {env: (out / env / "results.md").read_text() for env in ENVS}
    # The process backend rebuilds the same tables from the same run directories.
    local = run("compare", "--env", *ENVS, "--algos", "ppo", "ppo-lstm", "--seeds", "1", "--timesteps", "256", "--out", str(out),
                "--table-only", "--bootstrap-reps", "500", *TINY)  # fmt: skip
    assert_ok(local)
    for env in ENVS:
        assert (out / env / "results.md").read_text() == ray_tables[env]
        assert "| ppo | 1/1 |" in ray_tables[env] and "| ppo-lstm | 1/1 |" in ray_tables[env]
    report = (out / "results.md").read_text()
    assert "Aggregate over 2 envs (rliable)" in report and "P(ppo" in report
    agg = json.loads((out / "aggregate.json").read_text())
    assert set(agg["algos"]) == {"ppo", "ppo-lstm"} and len(agg["records"]) == 4
    assert (out / "performance_profile.png").stat().st_size > 0


def test_two_nodes_run_trials_on_both(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        node_ids = {node.node_id for node in cluster.list_all_nodes()}
        assert len(node_ids) == 2
        out = tmp_path / "cmp"
        proc = run("compare", "--backend", "ray", "--address", cluster.address, "--cpus-per-run", "1", "--env", "popgym-RepeatPrevious",
                   "--algos", "ppo", "--seeds", "2", "--timesteps", "512", "--out", str(out), *TINY)  # fmt: skip
        assert_ok(proc)
        used = {a["node_id"] for s in (0, 1) for a in attempts(out, f"{ENVS[0]}__ppo__s{s}")}
        assert used == node_ids  # one trial per node: each node has one CPU and each trial reserves one
        assert "| ppo | 2/2 |" in (out / "results.md").read_text()
    finally:
        cluster.shutdown()


def test_killed_worker_resumes_from_checkpoint_and_rerun_skips(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    cell = f"{ENVS[0]}__ppo__s0"
    args = ["compare", "--backend", "ray", "--env", "popgym-RepeatPrevious", "--algos", "ppo", "--seeds", "1", "--jobs", "1",
            "--timesteps", "6144", "--max-failures", "2", "--out", str(out), *TINY]  # fmt: skip
    proc = subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out / "runs" / cell
    deadline = time.time() + 120
    # Kill once Tune holds a checkpoint of the trial (reported with the first evaluation after an SB3 checkpoint):
    # its driver has logged a result naming the checkpoint, not only begun to write the checkpoint's folder.
    def tune_has_checkpoint() -> bool:
        for result_file in (out / "ray").glob(f"compare-*/{cell}/result.json"):
            for line in result_file.read_text().splitlines():
                try:
                    if json.loads(line).get("checkpoint_dir_name"):
                        return True
                except json.JSONDecodeError:  # a line still being written
                    continue
        return False

    while time.time() < deadline and not (attempts(out, cell) and tune_has_checkpoint()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    first = attempts(out, cell)
    assert first, "the trial never reported a checkpoint to Tune"
    os.kill(first[0]["pid"], signal.SIGKILL)  # the worker dies mid-run, as on a lost node
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    tries = attempts(out, cell)
    assert len(tries) == 2 and tries[1]["pid"] != tries[0]["pid"]
    assert tries[1]["restored_from_tune_checkpoint"]["timesteps"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == 6144
    assert summary["sessions"][-1]["timesteps_start"] > 0  # resumed from a checkpoint, not started over
    steps = np.load(run_dir / "evaluations.npz")["timesteps"]
    assert np.all(np.diff(steps) > 0) and steps[-1] == 6144  # no evaluation lost or recorded twice
    mtime = (run_dir / "summary.json").stat().st_mtime
    again = run(*args)
    assert_ok(again)
    assert "1 runs (1 already finished)" in again.stdout
    assert (run_dir / "summary.json").stat().st_mtime == mtime and len(attempts(out, cell)) == 2


def test_tune_early_stops_and_writes_a_preset_train_py_runs(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    # CartPole: returns differ between configurations after one update (at 512 steps, ASHA's first rung);
    # one trial at a time, seeded sampler and training: the same trials every time.
    proc = run(
        "tune", "--env", "CartPole-v1", "--algo", "ppo", "--trials", "4", "--timesteps", "1536", "--jobs", "2",
        "--max-concurrent", "1", "--grace-period", "512", "--reduction-factor", "2", "--out", str(out), *TINY,
    )  # fmt: skip
    assert_ok(proc)
    record = json.loads((out / "tune.json").read_text())
    trials = record["trials"]
    assert len(trials) == 4 and all(t["error"] is None for t in trials)
    stopped = [t for t in trials if t["stopped_early"]]
    assert stopped and all(t["timesteps"] < 1536 for t in stopped), trials  # ASHA stopped trials at its rungs
    assert record["best"]["timesteps"] == 1536 and record["best"]["score"] == max(t["score"] for t in trials if not t["stopped_early"])
    assert len({t["hp"]["learning_rate"] for t in trials}) == 4  # the sampler proposed four configurations
    preset = yaml.safe_load((out / "best.yml").read_text())
    assert preset["algo"] == "ppo" and preset["hp"] == {**record["best"]["hp"], "n_steps": 128, "batch_size": 64, "n_epochs": 1}
    train_out = tmp_path / "train"
    trained = run("--env", "CartPole-v1", "--preset", str(out / "best.yml"), "--timesteps", "256",
                  "--n-envs", "2", "--eval-freq", "256", "--eval-episodes", "2", "--out", str(train_out), "--run-name", "r",
                  "--no-progress-bar", "--hp", "n_eval_envs=2")  # fmt: skip
    assert_ok(trained)
    config = yaml.safe_load((train_out / "r" / "config.yml").read_text())
    for key in ("learning_rate", "ent_coef", "clip_range", "gae_lambda"):
        assert config["hyperparams"][key] == pytest.approx(preset["hp"][key])
    # A preset for another algorithm is a user error.
    wrong = run("--env", "CartPole-v1", "--algo", "ppo-lstm", "--preset", str(out / "best.yml"), "--out", str(train_out))
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1 and "is for ppo" in wrong.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "--env", "popgym-all-extreme", "--backend", "ray"], "difficulty must be one of"),
        (["compare", "--env", "popgym-RepeatPrevious", "--backend", "ray", "--cpus-per-run", "-1"], "must be >= 0"),
        (["compare", "--env", "popgym-RepeatPrevious", "--backend", "spark"], "invalid choice"),
        (["tune", "--env", "popgym-RepeatPrevious", "--algo", "ppo", "--trials", "2", "--timesteps", "256", "--space", "nope.yml"], "no such file"),
        (["tune", "--env", "popgym-RepeatPrevious", "--algo", "ppo", "--trials", "0", "--timesteps", "256"], "must be >= 1"),
        (["--env", "popgym-RepeatPrevious", "--preset", "nope.yml"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    proc = run(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1


def test_suites_expand_to_real_env_names() -> None:
    import envs
    from agents.suites import expand_envs

    every = expand_envs(["popgym-all"])
    assert len(every) == 48 and len({envs.resolve_env_name(n) for n in every}) == 48
    assert expand_envs(["popgym-core-easy"]) == [f"popgym-{t}Easy" for t in ("Autoencode", "RepeatPrevious", "RepeatFirst", "CountRecall")]
    assert len(expand_envs(["popgym-all-hard"])) == 16 and all(n.endswith("Hard") for n in expand_envs(["popgym-all-hard"]))
    remember = expand_envs(["mikasa-remember"])
    assert len(remember) == 9 and "mikasa-RememberColor3" in remember
    assert len(expand_envs(["mikasa-all"])) == 32
    # Env names pass through; repeats are dropped.
    assert expand_envs(["CartPole-v1", "popgym-core-easy", "CartPole-v1"])[0] == "CartPole-v1"
    assert len(expand_envs(["CartPole-v1", "popgym-core-easy", "CartPole-v1"])) == 5


def _stored_runs(tmp_path: Path, scores: dict[tuple[str, str], list[float]]) -> list[tuple[str, str, str, int, Path]]:
    """Write summary.json files as finished runs would, and return the cells."""
    cells = []
    for (env, algo), values in scores.items():
        for seed, score in enumerate(values):
            run_dir = tmp_path / f"{env}__{algo}__s{seed}"
            run_dir.mkdir()
            (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "score": score, "seed": seed}))
            cells.append((env, "popgym", algo, seed, run_dir))
    return cells


def test_rliable_aggregates_match_a_hand_computed_case(tmp_path: Path) -> None:
    from agents.aggregate import compute_aggregates, normalise, run_records, write_suite_report

    scores = {
        ("A", "ppo-elmur"): [0.0, 0.2, 0.4, 0.6],  # normalised (x + 1) / 2: 0.5 0.6 0.7 0.8
        ("B", "ppo-elmur"): [-1.0, -0.6, 1.0, 0.2],  # 0.0 0.2 1.0 0.6
        ("A", "ppo-lstm"): [-0.2, 0.0, 0.1, 0.3],  # 0.4 0.5 0.55 0.65
        ("B", "ppo-lstm"): [-1.0, -1.0, -0.8, 0.6],  # 0.0 0.0 0.1 0.8
    }
    cells = _stored_runs(tmp_path, scores)
    # An unfinished run is not a score.
    (tmp_path / "A__ppo-lstm__s3" / "summary.json").write_text(json.dumps({"status": "interrupted", "score": 0.9}))
    records = run_records(cells)
    assert len(records) == 15
    records.append({"env": "A", "family": "popgym", "algo": "ppo-lstm", "seed": 3, "score": 0.3})
    agg = compute_aggregates(records, reps=2000)
    elmur, lstm = agg["algos"]["ppo-elmur"], agg["algos"]["ppo-lstm"]
    # IQM over the 8 normalised scores: drop the 2 lowest and 2 highest, average the middle 4.
    assert elmur["iqm"] == pytest.approx((0.5 + 0.6 + 0.6 + 0.7) / 4)
    assert elmur["mean"] == pytest.approx((0.5 + 0.6 + 0.7 + 0.8 + 0.0 + 0.2 + 1.0 + 0.6) / 8)
    assert lstm["iqm"] == pytest.approx((0.1 + 0.4 + 0.5 + 0.55) / 4)
    assert lstm["mean"] == pytest.approx((0.4 + 0.5 + 0.55 + 0.65 + 0.0 + 0.0 + 0.1 + 0.8) / 8)
    # P(X > Y) per env from the 16 pairs, ties counting half: A 12.5/16, B 11/16; averaged over envs.
    (poi,) = agg["probability_of_improvement"]
    assert (poi["x"], poi["y"]) == ("ppo-elmur", "ppo-lstm") and poi["p"] == pytest.approx((12.5 / 16 + 11 / 16) / 2)
    for point, (low, high) in ((elmur["iqm"], elmur["iqm_ci95"]), (lstm["mean"], lstm["mean_ci95"]), (poi["p"], poi["ci95"])):
        assert low <= point <= high and low < high
    # A gym env has no known bounds: min-max over its runs.
    gym = normalise([{"env": "G", "family": "gym", "algo": a, "seed": 0, "score": s} for a, s in (("x", 10.0), ("y", 30.0), ("z", 20.0))])
    assert [r["normalised"] for r in gym] == [0.0, 1.0, 0.5]
    section = write_suite_report(tmp_path, {"A": "# A\n", "B": "# B\n"}, records, reps=500)
    assert "| ppo-elmur | 4 x 2 | 0.600" in section and "P(ppo-elmur > ppo-lstm) = 0.734" in section
    assert (tmp_path / "performance_profile.png").exists() and (tmp_path / "aggregate.json").exists()
