"""POPGym environments: name tables and construction.

Every POPGym environment of popgym 1.0.7 is registered with gymnasium under an
id such as ``popgym-RepeatPreviousEasy-v0`` (note the odd spelling
``popgym-VelocityOnlyCartpoleEasy-v0``). Users may type the short form
``popgym-<Name>[Easy|Medium|Hard]`` (Easy when no difficulty is given), the
class name spelling, or the full gymnasium id; matching ignores case.

POPGym environments end their episodes themselves: fixed-length card games
terminate when the deck is empty, and the time-limited ones (Battleship,
Concentration, MineSweeper, MultiarmedBandit, the pendulums and cartpoles,
the labyrinths) report ``truncated=True`` at their limit, which SB3 turns into
``TimeLimit.truncated`` and bootstraps from. No extra ``TimeLimit`` is added.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import gymnasium as gym

DIFFICULTIES = ("Easy", "Medium", "Hard")
PREFIX = "popgym-"

__all__ = ["DIFFICULTIES", "popgym_table", "popgym_short_names", "lookup_popgym", "make_popgym_env"]


@lru_cache(maxsize=1)
def popgym_table() -> dict[str, tuple[str, str]]:
    """
    The registered POPGym environments.

    :return: ``{short name: (gymnasium id, base name)}``, e.g.
        ``{"popgym-RepeatPreviousEasy": ("popgym-RepeatPreviousEasy-v0", "RepeatPrevious")}``;
        short names use the class names (``VelocityOnlyCartPoleEasy``).
    """
    import popgym.envs  # registers the ids with gymnasium

    table: dict[str, tuple[str, str]] = {}
    for cls, kwargs in popgym.envs.ALL.items():
        name = cls.__name__
        match = re.fullmatch(r"(.+?)(Easy|Medium|Hard)", name)
        if match is None:  # pragma: no cover - popgym 1.0.7 names all carry a difficulty
            continue
        table[PREFIX + name] = (kwargs["id"], match.group(1))
    return table


def popgym_short_names() -> list[str]:
    """:return: the short names ``popgym-<Name><Difficulty>`` of every POPGym environment, sorted"""
    return sorted(popgym_table())


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    """Lower-cased spellings users may type, mapped to gymnasium ids."""
    aliases: dict[str, str] = {}
    for short, (gym_id, base) in popgym_table().items():
        for spelling in (short, gym_id, gym_id[: -len("-v0")]):
            aliases[spelling.lower()] = gym_id
        if short.endswith("Easy"):
            # No difficulty means Easy.
            no_diff = PREFIX + base
            aliases[no_diff.lower()] = gym_id
            aliases[(no_diff + "-v0").lower()] = gym_id
            # popgym's own id spelling of the base name (VelocityOnlyCartpole).
            id_base = gym_id[: -len("Easy-v0")]
            aliases[id_base.lower()] = gym_id
            aliases[(id_base + "-v0").lower()] = gym_id
    return aliases


def lookup_popgym(name: str) -> str | None:
    """
    :param name: a user-typed POPGym name (any case, short or full form)
    :return: the gymnasium id, or None when ``name`` is no POPGym environment
    """
    return _aliases().get(name.strip().lower())


def make_popgym_env(gym_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """
    Create one (unwrapped by our wrappers) POPGym environment.

    :param gym_id: a registered POPGym gymnasium id (see :func:`lookup_popgym`)
    :param env_kwargs: keyword arguments for the environment's constructor
    :return: the environment
    """
    import popgym.envs  # noqa: F401  (registration)

    # These envs are known to conform; the passive checker would only warn that
    # CountRecall's infos share a counts array, at the cost of a layer per step.
    return gym.make(gym_id, disable_env_checker=True, **(env_kwargs or {}))
