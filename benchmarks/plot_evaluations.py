"""Plot the evaluation curves (``evaluations.npz``) of several run directories in one figure.

For runs that ``train.py compare`` did not make, e.g. the T-Maze curriculum steps started with
``--trained-agent``:

    python benchmarks/plot_evaluations.py docs/results/tmaze/curriculum/runs/* --metric success \
        --title "tmaze-100 from tmaze-30, success at length 1,000" --out curriculum.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories holding evaluations.npz")
    parser.add_argument("--metric", choices=["success", "return"], default="return")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in args.runs:
        path = run / "evaluations.npz"
        if not path.is_file():
            raise SystemExit(f"plot_evaluations.py: error: {path} does not exist (expected a train.py run directory)")
        data = np.load(path)
        key = "successes" if args.metric == "success" else "results"
        if key not in data:
            raise SystemExit(f"plot_evaluations.py: error: {path} has no {key!r}; use --metric return")
        ax.plot(data["timesteps"], data[key].mean(axis=1), marker=".", label=run.name)
    ax.set_xlabel("env steps of this run")
    ax.set_ylabel("success rate" if args.metric == "success" else "mean evaluation return")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
