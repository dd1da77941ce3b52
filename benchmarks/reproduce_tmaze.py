"""The T-Maze evidence, end to end: tmaze-30, the curriculum step, evaluation up to 1,000,000 steps.

For every algorithm and every seed (no seed is dropped or hand-picked):

1. ``train.py compare --env tmaze-30`` (the T-Maze preset, 400k env steps);
2. the curriculum step from that run's ``final_model.zip``: ``train.py --env tmaze-100
   --trained-agent ... --eval-env tmaze-1000`` (the ``tmaze-100`` preset, 300k env steps);
3. the models evaluated on corridors of increasing length (``eval_tmaze_lengths.py``, deterministic
   actions), three of them per seed: the curriculum step's model **without model selection** (its
   ``final_model.zip``) and **with** it (``best_model.zip``, the best evaluation at length 1,000 during
   the step), and the **tmaze-30 model alone** (step 1's ``final_model.zip``, no curriculum, no
   selection): a tmaze-30 run can learn a memory carry that does not decay, which the curriculum step
   can lose (docs/results, "Which models carry the cue to 1,000 steps").

A model *reaches* a length when it succeeds in every evaluation episode at that length and at every
shorter one; the lengths are evaluated in increasing order and a model's evaluation stops at its
first failure (a length-1,000,000 pass costs ~20-30 min on one CPU core). The report is the fraction of
seeds that reach each length, with a 95% Wilson interval, per algorithm and model choice.

Every stage is resumable: finished runs and evaluations are skipped, unfinished runs resume from
their last checkpoint, so rerunning the same command after a stop loses nothing.

    python benchmarks/reproduce_tmaze.py --out docs/results/tmaze_head --seeds 5 --jobs 2
    python benchmarks/reproduce_tmaze.py --out docs/results/tmaze_head --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.rundir import FINAL_MODEL, read_summary  # noqa: E402

TRAIN = [sys.executable, str(ROOT / "train.py")]
LENGTHS = (30, 100, 1_000, 10_000, 100_000, 1_000_000)
# Which model of a seed is evaluated: the curriculum step's final or selected model, or tmaze-30's final one.
CHOICES = {"final": FINAL_MODEL, "selected": "best_model.zip", "tmaze30": FINAL_MODEL}
CHOICE_LABELS = {"final": "final, no selection", "selected": "with selection", "tmaze30": "tmaze-30 only, no selection"}


def model_path(out: Path, algo: str, seed: int, choice: str) -> Path:
    """The model zip that ``choice`` names for one seed (see :data:`CHOICES`)."""
    if choice == "tmaze30":
        return out / "tmaze-30" / "runs" / f"tmaze-30__{algo}__s{seed}" / CHOICES[choice]
    return out / "curriculum" / f"tmaze-100__{algo}__s{seed}" / CHOICES[choice]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(command: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(command[1:]), f"> {log.relative_to(ROOT) if ROOT in log.parents else log}", flush=True)
    with log.open("a") as handle:
        subprocess.run(command, check=True, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)


def curriculum_step(out: Path, algo: str, seed: int, hp: list[str]) -> None:
    """Step 2 for one seed: start from the tmaze-30 final model, or resume, or skip if done."""
    name = f"tmaze-100__{algo}__s{seed}"
    run_dir = out / "curriculum" / name
    summary = read_summary(run_dir)
    if summary and summary.get("status") == "finished":
        return
    if summary is not None:
        command = [*TRAIN, "--resume", str(run_dir), "--no-progress-bar"]
    else:
        start = out / "tmaze-30" / "runs" / f"tmaze-30__{algo}__s{seed}" / FINAL_MODEL
        command = [*TRAIN, "--env", "tmaze-100", "--algo", algo, "--seed", str(seed), "--trained-agent", str(start),
                   "--eval-env", "tmaze-1000", "--out", str(out / "curriculum"), "--run-name", name, "--no-progress-bar"]  # fmt: skip
        command += ["--hp", *hp] if hp else []
    run(command, out / "logs" / f"{name}.log")


def evaluate_lengths(out: Path, algo: str, seed: int, choice: str, episodes: int, max_length: int) -> None:
    """Step 3 for one model: lengths in increasing order until the first one below 100%."""
    model = model_path(out, algo, seed, choice)
    if not model.exists():  # e.g. a selected model pruned when its run was published: report it as pending
        print(f"skipped: {model} does not exist; seed {seed}'s '{choice}' stays pending", flush=True)
        return
    path = out / "lengths" / f"{algo}__s{seed}__{choice}.json"
    results = json.loads(path.read_text())["results"] if path.exists() else []
    for length in (length for length in LENGTHS if length <= max_length):
        if any(r["length"] == length for r in results):
            continue
        if results and results[-1]["success_rate"] < 1.0:
            break
        probe = out / "lengths" / f".{algo}__s{seed}__{choice}__{length}.json"
        run([sys.executable, str(ROOT / "benchmarks" / "eval_tmaze_lengths.py"), str(model), "--algo", algo,
             "--lengths", str(length), "--episodes", str(episodes), "--out", str(probe)],
            out / "logs" / f"lengths__{algo}__s{seed}__{choice}.log")  # fmt: skip
        results += json.loads(probe.read_text())["results"]
        probe.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": str(model.relative_to(ROOT) if ROOT in model.parents else model),
                                    "episodes": episodes, "results": results}, indent=2) + "\n")  # fmt: skip


def reached(results: list[dict], length: int) -> bool | None:
    """100% at ``length`` and every shorter evaluated length; None if not evaluated (and no failure before)."""
    for r in results:
        if r["success_rate"] < 1.0:
            return False
        if r["length"] == length:
            return True
    return None


def report(out: Path, algos: list[str], seeds: int, max_length: int) -> str:
    lengths = [length for length in LENGTHS if length <= max_length]
    lines = [
        "| algorithm | model | " + " | ".join(f"{length:,}" for length in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    per_seed, table = [], {}
    for algo in algos:
        for choice in CHOICES:
            cells = []
            for length in lengths:
                outcomes = []
                for seed in range(seeds):
                    path = out / "lengths" / f"{algo}__s{seed}__{choice}.json"
                    outcomes.append(reached(json.loads(path.read_text())["results"], length) if path.exists() else None)
                done = [o for o in outcomes if o is not None]
                k, n = sum(done), len(done)
                low, high = wilson(k, n)
                table.setdefault(algo, {}).setdefault(choice, {})[length] = {"reached": k, "seeds": n, "wilson95": [low, high]}
                cells.append(f"{k}/{n} [{low:.2f}, {high:.2f}]" + ("" if n == seeds else f" ({seeds - n} pending)"))
            lines.append(f"| {algo} | {CHOICE_LABELS[choice]} | " + " | ".join(cells) + " |")
            for seed in range(seeds):
                path = out / "lengths" / f"{algo}__s{seed}__{choice}.json"
                if path.exists():
                    rates = {r["length"]: r["success_rate"] for r in json.loads(path.read_text())["results"]}
                    per_seed.append(f"| {algo} | {choice} | {seed} | " + " | ".join(
                        f"{rates[length]:.2f}" if length in rates else "-" for length in lengths) + " |")  # fmt: skip
    text = "\n".join([
        "Seeds that reach each length (100% of the evaluation episodes there and at every shorter length), "
        "with a 95% Wilson interval:", "", *lines, "",
        "Success rate per seed (- = not evaluated: a shorter length already failed):", "",
        "| algorithm | model | seed | " + " | ".join(f"{length:,}" for length in lengths) + " |",
        "|---|---|---|" + "---|" * len(lengths), *per_seed,
    ]) + "\n"  # fmt: skip
    (out / "lengths.md").write_text(text)
    (out / "lengths.json").write_text(json.dumps(table, indent=2) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--algos", nargs="+", default=["ppo-elmur", "ppo-lstm"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="training or evaluation processes at a time")
    parser.add_argument("--episodes", type=int, default=32, help="evaluation episodes per length")
    parser.add_argument("--max-length", type=int, default=LENGTHS[-1], choices=LENGTHS, help="longest corridor evaluated")
    parser.add_argument("--hp", nargs="*", default=[], help="--hp items for both training steps (e.g. a smaller budget for a smoke test)")
    parser.add_argument("--report-only", action="store_true", help="do not train or evaluate; rebuild the tables")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if not args.report_only:
        run([*TRAIN, "compare", "--env", "tmaze-30", "--algos", *args.algos, "--seeds", str(args.seeds), "--jobs", str(args.jobs),
             "--out", str(out / "tmaze-30"), *(["--hp", *args.hp] if args.hp else [])], out / "logs" / "tmaze-30.log")  # fmt: skip
        cells = [(algo, seed) for algo in args.algos for seed in range(args.seeds)]
        with ThreadPoolExecutor(args.jobs) as pool:  # each task is a subprocess: threads only wait
            list(pool.map(lambda cell: curriculum_step(out, *cell, args.hp), cells))
            # Model choice outermost: every seed's final model (the figure without selection) is evaluated
            # before any selected one, so a stopped session leaves the headline row the most complete.
            list(pool.map(lambda job: evaluate_lengths(out, *job, args.episodes, args.max_length),
                          [(algo, seed, choice) for choice in CHOICES for algo, seed in cells]))  # fmt: skip
    print(report(out, args.algos, args.seeds, args.max_length))
    return 0


if __name__ == "__main__":
    sys.exit(main())
