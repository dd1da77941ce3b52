"""Named env suites (``popgym-all``, ``popgym-core-hard``, ``mikasa-remember``, ...) and the expansion of several ``--env`` arguments into one list of envs.

Suites::

    popgym-all          the 48 POPGym envs (16 tasks x Easy, Medium, Hard), the paper's POPGym sum
    popgym-core         the 4 diagnostic memory tasks (Autoencode, RepeatPrevious, RepeatFirst, CountRecall)
    popgym-<category>   popgym's own categories: diagnostic, control, noisy, game, navigation
    mikasa-all          the 32 MIKASA-Robo tasks
    mikasa-remember     RememberColor, RememberShape, RememberShapeAndColor (9 tasks)
    mikasa-<family>     one MIKASA-Robo family, e.g. mikasa-shellgame

A POPGym suite takes a difficulty suffix (``popgym-all-easy``, ``popgym-core-hard``); without one
it holds all three difficulties. Anything that is no suite is an env name and passes through.
"""

from __future__ import annotations

from typing import Sequence

DIFFICULTY_SUFFIXES = ("easy", "medium", "hard")
# popgym.envs constants (lists of base classes) behind each POPGym suite.
POPGYM_CATEGORIES = {
    "core": "DIAGNOSTIC",
    "diagnostic": "DIAGNOSTIC",
    "control": "CONTROL",
    "noisy": "NOISY",
    "game": "GAME",
    "navigation": "NAVIGATION",
    "all": "ALL_BASE",
}
MIKASA_REMEMBER_FAMILIES = ("RememberColor", "RememberShape", "RememberShapeAndColor")


class UnknownSuiteError(ValueError):
    """A suite-like name (``popgym-all-...``, ``mikasa-all...``) that matches no suite; one line."""


def _mikasa_families() -> dict[str, list[str]]:
    # The task table lives with the MIKASA env code; reading it needs no ManiSkill import.
    from agents.sweep_api import mikasa_families

    return mikasa_families()


def _popgym_suite(category: str, difficulty: str | None) -> list[str]:
    import popgym.envs

    bases = [cls.__name__ for cls in getattr(popgym.envs, POPGYM_CATEGORIES[category])]
    levels = [difficulty.capitalize()] if difficulty else ["Easy", "Medium", "Hard"]
    # Difficulty-major order, as popgym lists them: all Easy tasks first.
    return [f"popgym-{base}{level}" for level in levels for base in bases]


def suite_names() -> list[str]:
    """:return: every suite name users can type (without difficulty suffixes)"""
    names = [f"popgym-{c}" for c in POPGYM_CATEGORIES] + ["mikasa-all", "mikasa-remember"]
    return names + [f"mikasa-{family.lower()}" for family in _mikasa_families()]


def expand_suite(name: str) -> list[str] | None:
    """
    :param name: a suite name (any case), e.g. ``popgym-core-easy``
    :return: its env names, or None when ``name`` is no suite
    """
    low = name.strip().lower()
    if low.startswith("popgym-"):
        rest = low[len("popgym-") :]
        category, _, difficulty = rest.partition("-")
        if category in POPGYM_CATEGORIES:
            if difficulty and difficulty not in DIFFICULTY_SUFFIXES:
                raise UnknownSuiteError(f"suite {name!r}: difficulty must be one of {', '.join(DIFFICULTY_SUFFIXES)}")
            return _popgym_suite(category, difficulty or None)
        return None
    if low.startswith("mikasa-"):
        families = _mikasa_families()
        key = low[len("mikasa-") :]
        if key == "all":
            return [f"mikasa-{t}" for tasks in families.values() for t in tasks]
        if key == "remember":
            return [f"mikasa-{t}" for fam in MIKASA_REMEMBER_FAMILIES for t in families[fam]]
        for family, tasks in families.items():
            if key == family.lower():
                return [f"mikasa-{t}" for t in tasks]
    return None


def expand_envs(names: Sequence[str]) -> list[str]:
    """
    :param names: ``--env`` arguments: env names and suite names, mixed
    :return: the env names in order, suites expanded, duplicates dropped (first occurrence kept)
    """
    out: list[str] = []
    for name in names:
        members = expand_suite(name)
        out.extend(members if members is not None else [name])
    return list(dict.fromkeys(out))


__all__ = ["UnknownSuiteError", "expand_envs", "expand_suite", "suite_names"]
