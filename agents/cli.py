"""The ``train.py`` command line: train (default), ``--resume``, ``--eval-only``, ``compare`` and ``tune``.

Usage::

    python train.py --env popgym-RepeatPrevious --algo ppo-elmur
    python train.py --env tmaze-30 --algo ppo-lstm --seed 1 --timesteps 300000 --hp n_steps=256 policy_kwargs.lstm_hidden_size=64
    python train.py --resume runs/<run dir>
    python train.py --env tmaze-100 --algo ppo-elmur --trained-agent runs/<tmaze-30 run>/final_model.zip --hp bptt_segments=11
    python train.py --eval-only runs/<run dir>/final_model.zip --eval-env tmaze-100000
    python train.py compare --env popgym-RepeatPrevious --algos ppo-elmur ppo-lstm ppo --seeds 3 --jobs 2
    python train.py compare --backend ray --address <head>:6379 --env popgym-all --algos ppo-elmur ppo-lstm --seeds 3
    python train.py tune --env popgym-RepeatPrevious --algo ppo-lstm --trials 32 --timesteps 500000
    python train.py --env popgym-RepeatPrevious --preset runs/<tune dir>/best.yml

User errors (unknown env, algo or ``--hp`` key, bad run directory) print one line and exit with
code 2, like argparse's own errors; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from agents.hyperparams import PROTOCOL_KEYS, HyperparamError, Override
from agents.registry import ALGOS, AlgoImportError, UnknownAlgoError, UnknownPolicyError

PROG = "train.py"


def _train_parser() -> argparse.ArgumentParser:
    algos = "\n".join(f"  {name:10s} {spec.description}" for name, spec in ALGOS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, resume or evaluate one agent. `train.py compare --help` for the multi-seed comparison.",
        epilog=f"algorithms:\n{algos}\n\nprotocol keys for --hp:\n"
        + "\n".join(f"  {k:18s} {v}" for k, v in PROTOCOL_KEYS.items())
        + "\n\nplus the algorithm's constructor keywords (n_steps, batch_size, ...) and policy_kwargs.<key>, env_kwargs.<key>",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", help="environment: popgym-<Name>[Easy|Medium|Hard], tmaze-<length>, mikasa-<Task>, or a gymnasium id")
    parser.add_argument("--algo", default=None, help=f"algorithm: {', '.join(ALGOS)} (default: ppo-elmur)")
    _add_protocol_flags(parser)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="parent directory of run directories (default: runs)")
    parser.add_argument("--run-name", default=None, help="run directory name (default: <env>__<algo>__s<seed>__<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument(
        "-i",
        "--trained-agent",
        type=Path,
        metavar="MODEL.zip",
        help="start a new run from a saved model's weights (same algo and network) with this run's env and "
        "hyperparameters: a curriculum step, e.g. train tmaze-30, then tmaze-100 from its final_model.zip",
    )
    parser.add_argument("--eval-only", type=Path, metavar="MODEL.zip", help="evaluate a saved model, write the result as JSON and exit")
    parser.add_argument("--preset", type=Path, metavar="PRESET.yml",
                        help="hyperparameters written by `train.py tune` (best.yml), applied before --hp; sets --algo")  # fmt: skip
    _add_session_flags(parser)
    return parser


def _add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timesteps", type=int, default=None, help="training budget in env steps (default: the preset's)")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel training envs (default: the preset's)")
    parser.add_argument("--eval-freq", type=int, default=None, help="evaluate every N env steps (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: the preset's)")
    parser.add_argument("--eval-env", default=None, help="evaluate on another env (e.g. train tmaze-30, evaluate tmaze-100000)")
    parser.add_argument(
        "--hp",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="override hyperparameters: n_steps=256 policy_kwargs.segment_len=32 env_kwargs.obs_mode=rgb; "
        "<algo>:key=value applies to that algorithm only",
    )
    parser.add_argument("--no-prev-action", action="store_true", help="do not add the previous action/reward to observations")


def _add_session_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: small models gain nothing from more)")
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar (e.g. when logging to a file)")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (1 prints the training statistics)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} compare",
        description="Train every (algorithm, seed) pair in parallel processes, then write a markdown table "
        "(mean and 95% t-interval over seeds) and a learning-curve plot. --hp items apply to every algorithm; "
        "prefix one with '<algo>:' (ppo-elmur:policy_kwargs.segment_len=32) to apply it to that algorithm only. "
        "Rerunning with the same --out skips finished runs and resumes interrupted ones. "
        "Several envs or suites give one grid; the report then adds rliable aggregates over the envs.",
    )
    parser.add_argument("--env", nargs="+", required=True,
                        help="environments (as for training) and suites: popgym-all, popgym-core, popgym-<category>[-easy|-medium|-hard], "
                        "mikasa-all, mikasa-remember, mikasa-<family>")  # fmt: skip
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), help=f"algorithms (default: {' '.join(ALGOS)})")
    parser.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=_positive_int, default=max(1, (os.cpu_count() or 2)), help="parallel training processes (default: CPU count)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: runs/compare__<env>__<timestamp>)")
    parser.add_argument("--table-only", action="store_true", help="do not train: rebuild the table and plot from the runs in --out")
    _add_protocol_flags(parser)
    parser.add_argument("--preset", nargs="+", type=Path, default=None, metavar="PRESET.yml",
                        help="presets written by `train.py tune`, each applied to its algorithm's cells before --hp")  # fmt: skip
    parser.add_argument("--bootstrap-reps", type=_positive_int, default=2000,
                        help="stratified-bootstrap replications of the aggregates over several envs (default 2000)")
    parser.add_argument("--device", default=None, help="torch device of each run (default: cuda with --gpus-per-run > 0, else cpu)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: worker processes on this machine (default); ray: one Ray Tune trial per run")  # fmt: skip
    _add_ray_flags(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _above_one(text: str) -> float:
    value = float(text)
    if value <= 1:
        raise argparse.ArgumentTypeError(f"must be > 1, got {value}")
    return value


def _add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (compare --backend ray, tune)")
    group.add_argument("--address", default=None,
                       help="join a running Ray cluster (the address `ray start --head` prints, or 'auto'); default: a local Ray")
    group.add_argument("--cpus-per-run", type=_nonnegative_float, default=1.0,
                       help="CPUs each run reserves, fractions allowed (default 1); also its torch threads")
    group.add_argument("--gpus-per-run", type=_nonnegative_float, default=0.0,
                       help="GPUs each run reserves, fractions allowed, e.g. 0.25 (default 0)")
    group.add_argument("--max-failures", type=int, default=2,
                       help="restarts of a failed run (e.g. its worker died), each from its last checkpoint (default 2)")  # fmt: skip


def _tune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} tune",
        description="Search hyperparameters of one algorithm on one env on Ray Tune: Optuna's TPE sampler, ASHA early "
        "stopping on the evaluation score (MMER or success rate). Writes <out>/best.yml, a preset for --preset, "
        "and <out>/trials.md. The search space: agents/hyperparams/search/common.yml + <algo>.yml, or --space.",
    )
    parser.add_argument("--env", required=True, help="environment (as for training)")
    parser.add_argument("--algo", required=True, help=f"algorithm: {', '.join(ALGOS)}")
    parser.add_argument("--trials", type=_positive_int, required=True, help="number of trials (configurations)")
    parser.add_argument("--timesteps", type=_positive_int, required=True, help="budget of each trial in env steps")
    parser.add_argument("--space", type=Path, default=None, help="search-space YAML (default: search/common.yml + search/<algo>.yml)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--grace-period", type=_positive_int, default=None,
                        help="ASHA: env steps before a trial can be stopped (default: max(eval_freq, timesteps / 9))")
    parser.add_argument("--reduction-factor", type=_above_one, default=3.0, help="ASHA: keep the top 1/N at each rung (default 3)")
    parser.add_argument("--max-concurrent", type=_positive_int, default=None, help="trials at a time (default: as resources allow)")
    parser.add_argument("--jobs", type=_positive_int, default=None, help="CPUs of a local Ray (default: all); ignored with --address")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: runs/tune__<env>__<algo>__<timestamp>)")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel training envs (default: the preset's)")
    parser.add_argument("--eval-freq", type=int, default=None, help="evaluate every N env steps (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: the preset's)")
    parser.add_argument("--hp", nargs="+", default=None, metavar="KEY=VALUE", help="fixed for every trial; a key given here is not searched")
    parser.add_argument("--device", default=None, help="torch device of each run (default: cuda with --gpus-per-run > 0, else cpu)")
    _add_ray_flags(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")  # fmt: skip
    return parser


def _user_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: the arguments (default ``sys.argv[1:]``)
    :return: the exit code
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("compare", "tune") else None
    parser = {"compare": _compare_parser, "tune": _tune_parser, None: _train_parser}[command]()
    args = parser.parse_args(argv[1:] if command else argv)
    # Imported after argparse, so --help does not wait for torch.
    import envs

    from agents.hyperparams import parse_overrides
    from agents.rundir import RunError

    from agents.suites import UnknownSuiteError

    try:
        if command == "tune":
            from agents.tune import run_tune

            return run_tune(args, argv)
        # --preset items come first, so --hp still overrides them; parsed once, compare hands them to its cells.
        overrides = parse_overrides(_preset_items(args, parser, command == "compare") + (args.hp or []))
        if command == "compare":
            from agents.compare import run_compare

            return run_compare(args, overrides, argv)
        return _main_train(args, parser, argv, overrides)
    except (envs.UnknownEnvError, UnknownAlgoError, UnknownPolicyError, HyperparamError, AlgoImportError, ImportError, RunError,
            UnknownSuiteError) as exc:  # fmt: skip
        if args.debug:
            raise
        return _user_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        # Outside training (start-up, evaluation): nothing to save.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _preset_items(args: argparse.Namespace, parser: argparse.ArgumentParser, is_compare: bool) -> list[str]:
    """:return: the ``--hp`` items of ``--preset`` (compare: prefixed ``<algo>:``); train.py takes the preset's algorithm"""
    from agents.presets import preset_overrides, read_preset

    if not args.preset:
        return []
    if is_compare:
        return preset_overrides(args.preset, args.algos, per_algo_prefix=True)
    if args.resume is not None:
        parser.error("--resume continues the recorded configuration; drop --preset")
    algo, _ = read_preset(args.preset)
    args.algo = args.algo or algo
    return preset_overrides([args.preset], [args.algo], per_algo_prefix=False)


def _main_train(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str], overrides: list[Override]) -> int:
    from agents.evaluate import evaluate_only
    from agents.experiment import flags_of, resolve_experiment
    from agents.rundir import default_run_name
    from agents.session import RunOptions, resume, run_cell

    _setup_torch(args.threads)
    options = RunOptions(device=args.device, progress_bar=not args.no_progress_bar, verbose=args.verbose)
    prev_action = False if args.no_prev_action else None

    if args.resume is not None:
        fixed = {
            "--env": args.env,
            "--algo": args.algo,
            "--seed": args.seed,
            "--hp": args.hp,
            "--n-envs": args.n_envs,
            "--eval-freq": args.eval_freq,
            "--eval-episodes": args.eval_episodes,
            "--eval-env": args.eval_env,
            "--eval-only": args.eval_only,
            "--run-name": args.run_name,
            "--trained-agent": args.trained_agent,
        }
        given = [flag for flag, value in fixed.items() if value is not None] + (["--no-prev-action"] if args.no_prev_action else [])
        if given:
            parser.error(f"--resume continues the recorded configuration; it accepts --timesteps, --device, --threads, not {' '.join(given)}")
        return resume(args.resume, options, timesteps=args.timesteps)["exit_code"]

    if args.eval_only is not None:
        if args.trained_agent is not None:
            parser.error("--eval-only evaluates the model it is given; drop --trained-agent")
        return evaluate_only(
            args.eval_only,
            options,
            env=args.env,
            eval_env=args.eval_env,
            algo=args.algo,
            eval_episodes=args.eval_episodes,
            seed=args.seed,
            overrides=overrides,
            out=args.out if "--out" in argv else None,
            prev_action=prev_action,
        )

    if args.env is None:
        parser.error("--env is required (e.g. --env popgym-RepeatPrevious)")
    seed = args.seed if args.seed is not None else 0
    exp = resolve_experiment(args.env, args.algo or "ppo-elmur", seed=seed, overrides=overrides, **flags_of(args))
    run_dir = args.out / (args.run_name or default_run_name(exp))
    summary = run_cell(exp, run_dir, options, [sys.executable, PROG, *argv], trained_agent=args.trained_agent)
    return summary["exit_code"]
