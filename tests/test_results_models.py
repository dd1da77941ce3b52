"""Every model a published result names is in the repository and loads (docs/results)."""

import fnmatch
import json
from pathlib import Path

import pytest

from agents.registry import algo_that_saved

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
# Folders whose models were not kept (results of earlier sessions, superseded; each listed with its reason).
NOT_KEPT = [
    line.split("#")[0].strip()
    for line in (RESULTS / "models_not_kept.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]


def _named_models() -> list[tuple[Path, str]]:
    named = []
    for path in sorted(RESULTS.rglob("*.json")):
        data = json.loads(path.read_text())
        for entry in data if isinstance(data, list) else [data]:
            for key in ("final_model", "last_checkpoint"):
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    named.append((path, entry[key]))
    return named


def _kept(json_path: Path) -> bool:
    relative = json_path.relative_to(RESULTS).as_posix()
    return not any(fnmatch.fnmatch(relative, pattern) for pattern in NOT_KEPT)


def _in_repo(model: str) -> Path | None:
    """A model path, relative to the repository root (or absolute as the training machine wrote it) -> this checkout's file."""
    marker = "docs/results/"
    return ROOT / marker / model.split(marker, 1)[1] if marker in model else None


CHECKED = [(path, model) for path, model in _named_models() if _kept(path)]


def test_published_results_name_models():
    assert CHECKED, "no kept results JSON names a model: the check below would pass vacuously"


@pytest.mark.parametrize("json_path,model", CHECKED, ids=lambda x: str(x)[-60:])
def test_every_published_model_exists_and_loads(json_path, model):
    relative = json_path.relative_to(RESULTS).as_posix()
    local = _in_repo(model)
    assert local is not None and local.exists(), f"{relative} names {model}, which is not in docs/results/"
    spec = algo_that_saved(local)
    assert spec is not None, f"{local} is not a model zip of a registered algorithm"
    spec.load_class().load(local, device="cpu")
