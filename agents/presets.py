"""Preset files: the best configuration that ``train.py tune`` writes, read back by ``--preset path.yml`` in ``train.py`` and ``compare`` as ``--hp`` items.

Format::

    algo: ppo-elmur                     # the algorithm the values belong to
    env: popgym-RepeatPreviousEasy-v0   # where they were found (informative: a preset may be used elsewhere)
    hp:                                 # --hp keys and values
      learning_rate: 0.00042
      policy_kwargs.segment_len: 32
    tuning: {...}                       # how they were found (trials, budget, score), informative

A preset's items come before the command line's ``--hp``, so ``--hp`` still overrides them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from agents.sweep_api import HyperparamError, get_algo


def hp_item(key: str, value: Any) -> str:
    """
    :param key: an ``--hp`` key, e.g. ``policy_kwargs.segment_len``
    :param value: its value
    :return: the ``key=value`` item; JSON spells numbers, booleans, null and lists the way the ``--hp``
        parser (YAML) reads them back
    """
    return f"{key}={json.dumps(value)}"


def read_preset(path: Path) -> tuple[str, list[str]]:
    """
    :param path: a preset file
    :return: ``(algo, --hp items)``
    :raises HyperparamError: when the file is missing or malformed (one line)
    """
    path = Path(path)
    if not path.is_file():
        raise HyperparamError(f"--preset {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HyperparamError(f"--preset {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("algo"), str) or not isinstance(data.get("hp"), dict):
        raise HyperparamError(f"--preset {path}: expected a mapping with 'algo' and 'hp' (as written by train.py tune)")
    algo = get_algo(data["algo"]).name
    return algo, [hp_item(str(k), v) for k, v in data["hp"].items()]


def preset_overrides(paths: Sequence[Path] | None, algos: Sequence[str], per_algo_prefix: bool) -> list[str]:
    """
    The ``--hp`` items of ``--preset`` files, to put before the command line's own.

    :param paths: the preset files (at most one per algorithm)
    :param algos: the algorithms of the command (``train.py``: one; ``compare``: several)
    :param per_algo_prefix: prefix each item with ``<algo>:`` (``compare``), so it applies to its algorithm only
    :return: the items
    :raises HyperparamError: for a preset of an algorithm the command does not run, or two for one
    """
    items: list[str] = []
    seen: dict[str, Path] = {}
    names = [get_algo(a).name for a in algos]
    for path in paths or []:
        algo, hp = read_preset(path)
        if algo not in names:
            raise HyperparamError(f"--preset {path} is for {algo}, but this command runs {', '.join(names)}")
        if algo in seen:
            raise HyperparamError(f"--preset: two presets for {algo} ({seen[algo]}, {path})")
        seen[algo] = Path(path)
        items += [f"{algo}:{item}" for item in hp] if per_algo_prefix else hp
    return items


def write_preset(path: Path, algo: str, env: str, hp: dict[str, Any], tuning: dict[str, Any]) -> None:
    """
    :param path: the file to write
    :param algo: the algorithm
    :param env: the env the values were found on
    :param hp: ``{--hp key: value}``
    :param tuning: how they were found (recorded, not read back)
    """
    header = (
        f"# Best configuration found by `train.py tune` for {algo} on {env}.\n"
        f"# Use: python train.py --env {env} --algo {algo} --preset {path.name}\n"
        f"#      python train.py compare --env ... --algos {algo} ... --preset {path.name}\n"
    )
    body = yaml.safe_dump({"algo": algo, "env": env, "hp": hp, "tuning": tuning}, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + body)
    tmp.replace(path)


__all__ = ["hp_item", "preset_overrides", "read_preset", "write_preset"]
