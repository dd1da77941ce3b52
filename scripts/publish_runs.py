"""Make finished run directories fit to commit under ``docs/results/``.

A run directory holds more than a published figure needs: periodic checkpoints and
``best_model.zip`` (each an ELMUR model of ~6 MB with its Adam state), and absolute paths in
``summary.json`` that only exist on the machine that trained it. For every run directory found
under the given folders, this keeps ``final_model.zip`` (+ ``vecnormalize.pkl``), the evaluations,
logs and TensorBoard events, deletes ``checkpoints/`` and ``best_model.zip``, and rewrites the
summary's paths relative to the repository root, with ``last_checkpoint`` pointing at the final model
(what ``--resume`` of a finished run needs); the copies of those paths in grid-level JSON files
(``summaries/``, ``results.json``) are rewritten alike. Unfinished runs are left untouched (they are still
resumable); so is everything outside the repository.

The kept models are also slimmed: their optimizer state (Adam's two moments per parameter, twice the
size of the weights) is replaced by that of a fresh optimizer. A slim model loads, predicts and
evaluates exactly as before; training it further (``--resume``, ``--trained-agent``) starts Adam's moments
afresh. ``--keep-optimizer`` keeps them.

    python scripts/publish_runs.py docs/results/bench_learning/CartPoleNoVel
    python scripts/publish_runs.py --dry-run docs/results/tmaze_final
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.rundir import CHECKPOINT_DIR, CONFIG_FILE, FINAL_MODEL, SUMMARY_FILE, read_summary  # noqa: E402
PATH_KEYS = ("final_model", "last_checkpoint", "run_dir")


def relative_to_repo(path: str, run_dir: Path, root: Path) -> str:
    """A path a summary names, as seen from the repository root (it may name another checkout or /tmp)."""
    marker = "docs/results/"
    if marker in path:
        return marker + path.split(marker, 1)[1]
    p = Path(path)
    return str(run_dir.relative_to(root) / p.name) if p.is_absolute() else path


def locate_run_dir(recorded: str, json_path: Path, root: Path) -> Path:
    """The run directory in this checkout that a grid-level JSON's ``run_dir`` names.

    A run trained outside the repository (another folder, then copied in) has no ``docs/results/`` in
    its recorded path: it is found by name beside the JSON or in a ``runs/`` folder above it, as
    ``compare`` lays out ``<grid>/summaries/``, ``<grid>/results.json`` and ``<grid>/runs/<run>``.
    """
    if "docs/results/" not in recorded:
        name = Path(recorded).name
        for folder in (json_path.parent, *json_path.parents):
            for candidate in (folder / "runs" / name, folder / name):
                if is_run_dir(candidate):
                    return candidate
            if folder == root:
                break
    return root / relative_to_repo(recorded, json_path.parent, root)


def fix_copies(json_path: Path, root: Path, dry_run: bool) -> list[str]:
    """Point the path entries of a grid-level JSON (compare's ``summaries/``, ``results.json`` and the
    ``runs`` list inside it) at the kept files."""
    data = json.loads(json_path.read_text())
    changed = False
    runs = (data.get("runs") or []) if isinstance(data, dict) else []  # compare's results.json names its runs inside
    entries = data if isinstance(data, list) else [data, *runs]
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("run_dir"), str):
            continue
        if isinstance(entry.get("log"), str) and "docs/results/" in entry["log"]:  # a compare log kept beside the grid
            value = relative_to_repo(entry["log"], json_path.parent, root)
            changed |= value != entry["log"]
            entry["log"] = value
        run_dir = locate_run_dir(entry["run_dir"], json_path, root)
        for key in PATH_KEYS:
            if isinstance(entry.get(key), str):
                value = str(run_dir.relative_to(root)) if key == "run_dir" else relative_to_repo(entry[key], run_dir, root)
                if key == "last_checkpoint" and (run_dir / FINAL_MODEL).exists():
                    value = str((run_dir / FINAL_MODEL).relative_to(root))
                changed |= value != entry[key]
                entry[key] = value
    if not changed:
        return []
    if not dry_run:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    return [f"rewrite paths in {json_path.relative_to(root)}"]


def is_run_dir(folder: Path) -> bool:
    """A run directory of train.py: its summary beside its resolved config."""
    return (folder / SUMMARY_FILE).exists() and (folder / CONFIG_FILE).exists()


OPTIMIZER_STATE = "policy.optimizer.pth"


def slim_model(path: Path) -> bool:
    """Replace a saved SB3 model's optimizer state with a fresh optimizer's (its hyperparameters kept,
    its per-parameter state dropped); False if there was none to drop."""
    import torch as th

    with zipfile.ZipFile(path) as archive:
        if OPTIMIZER_STATE not in archive.namelist():
            return False
        state = th.load(io.BytesIO(archive.read(OPTIMIZER_STATE)), map_location="cpu", weights_only=True)
        if not state.get("state"):
            return False
        buffer = io.BytesIO()
        th.save({**state, "state": {}}, buffer)
        members = [(info, buffer.getvalue() if info.filename == OPTIMIZER_STATE else archive.read(info)) for info in archive.infolist()]
    slim = path.with_suffix(".slim.zip")
    with zipfile.ZipFile(slim, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    slim.replace(path)
    return True


def publish(run_dir: Path, root: Path, dry_run: bool, keep_best: bool = False, keep_optimizer: bool = False) -> list[str]:
    """Prune one finished run directory; returns what was (or would be) done."""
    summary_path = run_dir / SUMMARY_FILE
    summary = read_summary(run_dir) or {}
    if summary.get("status") != "finished" or not (run_dir / FINAL_MODEL).exists():
        return [f"skip {run_dir.relative_to(root)}: not finished"]
    done = []
    for extra in (run_dir / CHECKPOINT_DIR, *(() if keep_best else (run_dir / "best_model.zip",))):
        if extra.exists():
            done.append(f"remove {extra.relative_to(root)}")
            if not dry_run:
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    for model in (run_dir / FINAL_MODEL, run_dir / "best_model.zip"):
        if not keep_optimizer and model.exists() and (dry_run or slim_model(model)):
            done.append(f"slim {model.relative_to(root)} (optimizer state dropped)")
    final = str((run_dir / FINAL_MODEL).relative_to(root))
    new = {key: relative_to_repo(summary[key], run_dir, root) for key in PATH_KEYS if summary.get(key)}
    new["final_model"] = new["last_checkpoint"] = final
    new["run_dir"] = str(run_dir.relative_to(root))
    if any(summary.get(key) != value for key, value in new.items()):
        done.append(f"rewrite paths in {summary_path.relative_to(root)}")
        if not dry_run:
            summary_path.write_text(json.dumps({**summary, **new}, indent=2) + "\n")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders searched for run directories (with summary.json)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--keep-best", action="store_true",
                        help="keep best_model.zip too (results that report model selection, e.g. the T-Maze curriculum)")
    parser.add_argument("--keep-optimizer", action="store_true",
                        help="keep the models' optimizer state (default: dropped, a third of the size; see above)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout the paths are made relative to")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    for folder in args.folders:
        folder = folder.resolve()
        if not folder.is_dir() or root not in (folder, *folder.parents):
            print(f"error: {folder} is not a folder inside the checkout {root}", file=sys.stderr)
            return 2
    for folder in args.folders:
        for summary in sorted(folder.resolve().rglob(SUMMARY_FILE)):
            if is_run_dir(summary.parent):
                for line in publish(summary.parent, root, args.dry_run, args.keep_best, args.keep_optimizer):
                    print(line)
        for json_path in sorted(folder.resolve().rglob("*.json")):
            if json_path.name != SUMMARY_FILE or not is_run_dir(json_path.parent):
                for line in fix_copies(json_path, root, args.dry_run):
                    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
