"""``train.py tune``: hyperparameter search for one algorithm on one env with Optuna's TPE sampler through Ray Tune and ASHA early stopping, writing the best configuration as a preset file.

Each trial is a run of the same runner as ``train.py`` (run directory ``<out>/trials/<trial id>``)
that reports every evaluation to Tune; ASHA stops trials whose score at a rung (``--grace-period``
env steps, then times ``--reduction-factor``) is in the bottom of the trials that reached it. The
search space is ``agents/hyperparams/search/common.yml`` (the PPO keys, the same for every
algorithm: equal tuning effort) merged with ``search/<algo>.yml``, or ``--space FILE``.

Output directory::

    trials/<trial id>/   each trial's run directory        logs/, attempts/   as for compare --backend ray
    trials.md            every trial: its values, score, env steps reached, stopped early or not
    tune.json            the same, machine-readable, with the command
    best.yml             the best configuration as a preset (``train.py --preset best.yml``)
    ray/                 Tune's experiment state
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from agents.presets import hp_item, write_preset
from agents.sweep_api import HYPERPARAMS_DIR, PROTOCOL_KEYS, HyperparamError, parse_overrides, resolve_experiment
from agents.sweep_ray import Cell, init_ray, ray_options, run_and_report

SEARCH_DIR = HYPERPARAMS_DIR / "search"
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")


def load_space(algo: str, path: Path | None = None) -> dict[str, dict[str, list[Any]]]:
    """
    :param algo: registry name of the algorithm
    :param path: a search-space file, or None for ``search/common.yml`` merged with ``search/<algo>.yml``
    :return: ``{--hp key: {distribution: arguments}}``
    :raises HyperparamError: on a missing file or a malformed entry (one line)
    """
    paths = [path] if path is not None else [SEARCH_DIR / "common.yml", SEARCH_DIR / f"{algo}.yml"]
    space: dict[str, dict[str, list[Any]]] = {}
    for p in paths:
        if not p.is_file():
            if path is None and p.name != "common.yml":
                continue  # an algorithm without keys of its own
            raise HyperparamError(f"--space {p}: no such file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise HyperparamError(f"{p}: expected a mapping of --hp keys to distributions")
        for key, dist in data.items():
            if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS):
                raise HyperparamError(f"{p}: {key}: expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...], got {dist!r}")
            kind, args = next(iter(dist.items()))
            if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
                raise HyperparamError(f"{p}: {key}: {kind} takes {'a list of values' if kind == 'choice' else '[low, high]'}")
            if str(key).split(".")[0] in PROTOCOL_KEYS:
                raise HyperparamError(f"{p}: {key} is a protocol key (the same for every trial); set it with --hp or a flag")
            space[str(key)] = {kind: args}
    return space


def to_tune_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """:return: the space as Ray Tune domains (which OptunaSearch turns into Optuna distributions)"""
    from ray import tune

    out: dict[str, Any] = {}
    for key, dist in space.items():
        kind, args = next(iter(dist.items()))
        if kind == "loguniform":
            out[key] = tune.loguniform(float(args[0]), float(args[1]))
        elif kind == "uniform":
            out[key] = tune.uniform(float(args[0]), float(args[1]))
        elif kind == "randint":
            out[key] = tune.randint(int(args[0]), int(args[1]) + 1)  # Tune's upper bound is exclusive
        else:
            out[key] = tune.choice(args)
    return out


def _corner(space: dict[str, dict[str, list[Any]]], index: int) -> dict[str, Any]:
    """One point of the space: every low end (index 0) or every high end (index -1), for validation."""
    return {k: next(iter(d.values()))[index] for k, d in space.items()}


def tune_trainable(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """
    The Tune function trainable of one search trial: resolve the sampled configuration, then run it
    (see :func:`agents.sweep_ray.run_and_report`).

    :param config: ``{"hp": {--hp key: sampled value}}``
    :param setup: env, algo, seed, fixed ``--hp`` items, protocol flags, output directory, device, threads
    """
    from ray import tune

    items = setup["hp"] + [hp_item(k, v) for k, v in config["hp"].items()]
    exp = resolve_experiment(setup["env"], setup["algo"], seed=setup["seed"], overrides=parse_overrides(items), **setup["flags"])
    trial_id = tune.get_context().get_trial_id()
    out = Path(setup["out"])
    command = [sys.executable, "train.py", "--env", exp.env, "--algo", exp.algo, "--seed", str(exp.seed)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in setup["flags"].items() if v is not None] + ["--hp", *items]
    cell = Cell(trial_id, exp, out / "trials" / trial_id, out / "logs" / f"{trial_id}.log", command)
    run_and_report(cell, setup["device"], setup["threads"], out / "attempts")


def run_tune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """
    :param args: parsed ``tune`` flags
    :param argv: the command line, recorded in tune.json
    :return: exit code (0 when a best configuration was written, 1 when no trial finished)
    """
    flags = {"timesteps": args.timesteps, "n_envs": args.n_envs, "eval_freq": args.eval_freq, "eval_episodes": args.eval_episodes}
    fixed = parse_overrides(args.hp)
    base = resolve_experiment(args.env, args.algo, seed=args.seed, overrides=fixed, **flags)
    fixed_keys = {".".join(o.parts) for o in fixed}
    space = {k: v for k, v in load_space(base.algo, args.space).items() if k not in fixed_keys}  # --hp fixes a key
    if not space:
        raise HyperparamError("nothing to search: --hp fixes every key of the search space")
    for index in (0, -1):  # both corners of the space must be valid configurations, before Ray starts
        items = list(args.hp or []) + [hp_item(k, v) for k, v in _corner(space, index).items()]
        resolve_experiment(args.env, base.algo, seed=args.seed, overrides=parse_overrides(items), **flags)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    out = (args.out or Path("runs") / f"tune__{base.env}__{base.algo}__{_dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    hp = base.hyperparams
    eval_freq = hp["eval_freq"] or args.timesteps
    grace = min(args.timesteps, args.grace_period or max(eval_freq, args.timesteps // 9))
    opts = ray_options(args)
    device = args.device or ("cuda" if opts.gpus_per_run > 0 else "cpu")
    setup = {"env": base.env, "algo": base.algo, "seed": args.seed, "hp": list(args.hp or []), "flags": flags,
             "out": str(out), "device": device, "threads": max(1, int(opts.cpus_per_run))}  # fmt: skip
    init_ray(opts)
    print(f"tune {base.algo} on {base.env}: {args.trials} trials x {args.timesteps:,} steps, {len(space)} keys, "
          f"ASHA grace {grace:,} steps, reduction factor {args.reduction_factor:g} -> {out}", flush=True)  # fmt: skip
    started = time.time()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(tune_trainable, setup=setup), {"cpu": opts.cpus_per_run, "gpu": opts.gpus_per_run}),
        param_space={"hp": to_tune_space(space)},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            search_alg=OptunaSearch(seed=args.search_seed),
            scheduler=ASHAScheduler(time_attr="timesteps", max_t=args.timesteps, grace_period=grace, reduction_factor=args.reduction_factor),
            num_samples=args.trials,
            max_concurrent_trials=args.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(out / "ray"),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    grid = tuner.fit()
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        reached = int(metrics.get("timesteps", 0) or 0)
        trials.append(
            {
                "trial_id": metrics.get("trial_id") or Path(result.path).name,
                "hp": result.config["hp"],
                "score": metrics.get("score"),
                "timesteps": reached,
                "stopped_early": result.error is None and reached < args.timesteps,
                "error": None if result.error is None else str(result.error).strip().splitlines()[-1][:200],
            }
        )
    return _write_results(args, argv, base, space, trials, grace, out, time.time() - started)


def _write_results(args: argparse.Namespace, argv: Sequence[str], base: Any, space: dict[str, Any],
                   trials: list[dict[str, Any]], grace: int, out: Path, wall: float) -> int:  # fmt: skip
    """Write trials.md, tune.json and best.yml (the best trial that ran its whole budget)."""
    full = [t for t in trials if t["error"] is None and t["timesteps"] >= args.timesteps and t["score"] is not None]
    best = max(full, key=lambda t: t["score"]) if full else None
    keys = list(space)
    lines = [f"# tune {base.algo} on {base.env}", "",
             f"{len(trials)} trials x {args.timesteps:,} env steps; score: {base.metric} (higher is better); "
             f"ASHA grace {grace:,} steps, reduction factor {args.reduction_factor:g}; {wall:.0f} s", "",
             "| trial | score | env steps | stopped early | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]  # fmt: skip
    for t in sorted(trials, key=lambda t: -(t["score"] if t["score"] is not None else float("-inf"))):
        score = f"{t['score']:.3f}" if t["score"] is not None else "n/a"
        mark = " (best)" if t is best else ""
        values = " | ".join(f"{t['hp'].get(k):.3g}" if isinstance(t["hp"].get(k), float) else str(t["hp"].get(k)) for k in keys)
        state = "error" if t["error"] else ("yes" if t["stopped_early"] else "no")
        lines.append(f"| {t['trial_id']}{mark} | {score} | {t['timesteps']:,} | {state} | {values} |")
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    record = {"env": base.env, "algo": base.algo, "command": [sys.executable, "train.py", *argv], "space": space,
              "timesteps": args.timesteps, "grace_period": grace, "reduction_factor": args.reduction_factor,
              "wall_time_s": round(wall, 1), "trials": trials, "best": best}  # fmt: skip
    (out / "tune.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))
    if best is None:
        print(f"no trial ran its whole budget: no best.yml (see {out / 'logs'})", file=sys.stderr)
        return 1
    fixed = {o.text.split("=", 1)[0]: o.value for o in parse_overrides(args.hp) if o.parts[0] not in PROTOCOL_KEYS}
    tuning = {"metric": base.metric, "score": best["score"], "trial": best["trial_id"], "trials": len(trials),
              "timesteps": args.timesteps, "seed": args.seed, "command": ["train.py", *argv]}  # fmt: skip
    write_preset(out / "best.yml", base.algo, base.env, {**fixed, **best["hp"]}, tuning)
    print(f"\nbest: {best['trial_id']} (score {best['score']:.3f}) -> {out / 'best.yml'}\n"
          f"use:  python train.py --env {base.env} --algo {base.algo} --preset {out / 'best.yml'}")  # fmt: skip
    return 0


__all__ = ["load_space", "run_tune", "to_tune_space", "tune_trainable"]
