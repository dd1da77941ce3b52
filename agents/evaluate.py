"""``train.py --eval-only``: evaluate a saved model on an env (its run's, or another) and write the result as JSON."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agents.build import check_model_zip, make_eval_env
from agents.experiment import experiment_from_config, resolve_experiment
from agents.hyperparams import Override, apply_overrides
from agents.registry import get_algo
from agents.rundir import RunError, checkpoint_vecnormalize, find_run_dir, package_versions, read_config, write_json
from agents.session import EVAL_SEED_OFFSET, RunOptions


def evaluate_only(
    model_path: Path,
    options: RunOptions,
    env: str | None = None,
    eval_env: str | None = None,
    algo: str | None = None,
    eval_episodes: int | None = None,
    seed: int | None = None,
    overrides: Sequence[Override] | None = None,
    out: Path | None = None,
    prev_action: bool | None = None,
) -> int:
    """
    Evaluate a saved model and write the result as JSON.

    The env, algorithm and protocol come from the run's config.yml when the model lies in a run
    directory (``final_model.zip``, ``best_model.zip``, ``checkpoints/*.zip``); flags override them.

    :param model_path: the model zip
    :param options: device
    :param env: training env name (needed only without a run directory)
    :param eval_env: the env to evaluate on (default: the run's eval env)
    :param algo: algorithm name (default: from config.yml or from the zip)
    :param eval_episodes: number of episodes (default: the preset's)
    :param seed: evaluation seed (default: the run's seed + 10000)
    :param overrides: parsed ``--hp`` overrides (protocol keys such as env_kwargs, n_eval_envs, eval_deterministic)
    :param out: directory for the result JSON (default: ``<run dir>/eval`` or next to the model)
    :param prev_action: False for ``--no-prev-action`` (only without a run directory)
    :return: exit code
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    if not model_path.exists():
        raise RunError(f"--eval-only: no such model file: {model_path}")
    model_path = model_path.resolve()
    run_dir = find_run_dir(model_path)
    if run_dir is not None:
        config = read_config(run_dir)
        if algo is not None and get_algo(algo).name != config["algo"]:
            raise RunError(f"--algo {algo} does not match the run's algo {config['algo']}")
        check_model_zip(model_path, config["algo"], "--eval-only")
        exp = experiment_from_config(config)
        if eval_env is not None or env is not None:
            import envs

            exp.eval_env = envs.resolve_env_name(eval_env or env)
        if overrides:
            exp.hyperparams = apply_overrides(exp.hyperparams, overrides, exp.spec)
        if prev_action is not None:
            exp.hyperparams["prev_action"] = prev_action
    else:
        _, algo = check_model_zip(model_path, get_algo(algo).name if algo is not None else None, "--eval-only")
        if env is None and eval_env is None:
            raise RunError("--eval-only outside a run directory needs --env (or --eval-env)")
        exp = resolve_experiment(env or eval_env, algo, seed=seed or 0, overrides=overrides, eval_env=eval_env, prev_action=prev_action)
    if eval_episodes is not None:
        exp.hyperparams["eval_episodes"] = eval_episodes
    n_episodes = exp.hyperparams["eval_episodes"]
    eval_seed = seed if seed is not None else exp.seed + EVAL_SEED_OFFSET
    venv = make_eval_env(exp, eval_seed, n_episodes, vecnormalize_path=checkpoint_vecnormalize(model_path))
    try:
        model = exp.spec.load_class().load(str(model_path), device=options.device)
        successes: list[float] = []
        # Long corridors (tmaze-1000000) take minutes: report progress every 30 s.
        progress = {"calls": 0, "last": time.time()}

        def collect_success(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
            if locals_["done"]:
                info = locals_["info"]
                if "is_success" in info:
                    successes.append(float(info["is_success"]))
            progress["calls"] += 1  # once per env per step
            if progress["calls"] % 1000 == 0 and time.time() - progress["last"] > 30:
                progress["last"] = time.time()
                finished = int(np.sum(locals_["episode_counts"]))
                print(f"  ... {progress['calls']:,} env steps, {finished}/{n_episodes} episodes done", flush=True)

        print(f"evaluating {model_path} on {exp.eval_env}: {n_episodes} episodes ...", flush=True)
        started = time.time()
        returns, lengths = evaluate_policy(
            model,
            venv,
            n_eval_episodes=n_episodes,
            deterministic=exp.hyperparams.get("eval_deterministic", True),
            return_episode_rewards=True,
            warn=False,
            callback=collect_success,
        )
        wall = time.time() - started
    finally:
        venv.close()
    returns_arr = np.asarray(returns, dtype=float)
    result = {
        "model": str(model_path),
        "algo": exp.algo,
        "train_env": exp.env,
        "eval_env": exp.eval_env,
        "episodes": int(len(returns_arr)),
        "deterministic": bool(exp.hyperparams.get("eval_deterministic", True)),
        "seed": int(eval_seed),
        "mean_return": float(returns_arr.mean()),
        "std_return": float(returns_arr.std()),
        "mean_length": float(np.mean(lengths)),
        "success_rate": float(np.mean(successes)) if successes else None,
        "returns": returns_arr.tolist(),
        "lengths": [int(x) for x in lengths],
        "wall_time_s": round(wall, 2),
        "env_steps_per_s": float(np.sum(lengths) / wall) if wall > 0 else None,
        "versions": package_versions(),
    }
    dest_dir = out or ((run_dir / "eval") if run_dir is not None else model_path.parent)
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = dest_dir / f"eval__{model_path.stem}__{exp.eval_env}__{stamp}.json"
    write_json(dest, result)
    line = f"{exp.eval_env}: mean return {result['mean_return']:.3f} +/- {result['std_return']:.3f} over {result['episodes']} episodes"
    if result["success_rate"] is not None:
        line += f", success rate {result['success_rate']:.3f}"
    print(line + f" ({wall:.1f} s)\nwritten: {dest}", flush=True)
    return 0
