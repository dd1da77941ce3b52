"""Environment names and construction of vectorized environments.

Names users can type (``--env``):

* ``popgym-<Name>[Easy|Medium|Hard]``: all 48 POPGym environments; no
  difficulty means Easy; the full gymnasium id works too (any case).
* ``tmaze-<length>``: the passive T-Maze (:mod:`envs.tmaze`), natively vectorized.
* ``mikasa-<Task>``: MIKASA-Robo tasks (:mod:`envs.mikasa`, needs ManiSkill3).
* any other registered gymnasium id (``CartPole-v1``; ``module:Id`` imports the module first).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from typing import Callable

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from envs.popgym_envs import lookup_popgym, make_popgym_env, popgym_short_names
from envs.tmaze import TMazeVecEnv
from envs.wrappers import wrap_env

__all__ = ["UnknownEnvError", "closest_names", "resolve_env_name", "env_family", "list_env_names", "make_vec_env"]

MIKASA_INSTALL_HINT = "bash scripts/install_mikasa.sh"
TMAZE_EXAMPLES = ["tmaze-10", "tmaze-100", "tmaze-1000", "tmaze-1000000"]
OTHER_EXAMPLES = ["mikasa-RememberColor3", "CartPole-v1"]
_TMAZE_RE = re.compile(r"tmaze-(\d+)", re.IGNORECASE)


class UnknownEnvError(ValueError):
    """An environment name that no family recognises; the message names the closest valid names."""


def closest_names(name: str, valid: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """
    The "did you mean" of every name the benchmark accepts (environments here, algorithms in ``agents``).

    :param name: what the user typed
    :param valid: the accepted names
    :param n: how many suggestions at most
    :param cutoff: how similar (difflib ratio, 0 to 1) a suggestion must be
    :return: the closest valid names, compared case-insensitively and spelled as in ``valid``, best first
    """
    by_lower: dict[str, str] = {}
    for cand in valid:
        by_lower.setdefault(cand.lower(), cand)
    return [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=cutoff)]


def _unknown(name: str, candidates: list[str], what: str = "environment") -> UnknownEnvError:
    """Build the one-line error, with close matches found case-insensitively."""
    close = closest_names(name, candidates)
    hint = "did you mean " + ", ".join(repr(c) for c in close) + "?" if close else "see envs.list_env_names()"
    return UnknownEnvError(f"Unknown {what} {name!r}: {hint}")


def _import_mikasa() -> tuple[Callable[..., VecEnv], list[str]]:
    """Import the MIKASA-Robo family lazily; ManiSkill3 is an optional, heavy dependency."""
    try:
        from envs.mikasa import MIKASA_TASKS, make_mikasa_vec_env
    except ImportError as exc:
        raise ImportError(
            f"mikasa-* environments need ManiSkill3 and MIKASA-Robo; run `{MIKASA_INSTALL_HINT}` ({exc})"
        ) from None
    return make_mikasa_vec_env, list(MIKASA_TASKS)


def _mikasa_task(name: str) -> str:
    """Map ``mikasa-<Task>`` (any case, optional ``-v0``) to the task name as listed in MIKASA_TASKS."""
    _, tasks = _import_mikasa()
    wanted = name[len("mikasa-") :].lower()
    for task in tasks:
        low = task.lower()
        if wanted in (low, low.removesuffix("-v0")) or wanted.removesuffix("-v0") == low.removesuffix("-v0"):
            return task
    raise _unknown(name, ["mikasa-" + t.removesuffix("-v0") for t in tasks], "MIKASA-Robo task")


def _gym_id(name: str) -> str | None:
    """Return ``name`` if it is a registered gymnasium id (importing ``module:`` prefixes first)."""
    if ":" in name:
        module, _, env_id = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError:
            return None
        return name if env_id in gym.envs.registry else None
    return name if name in gym.envs.registry else None


def resolve_env_name(name: str) -> str:
    """
    Canonical form of an environment name.

    :param name: e.g. ``popgym-RepeatPrevious``, ``popgym-CountRecallHard-v0``,
        ``tmaze-30``, ``mikasa-RememberColor3``, ``CartPole-v1``
    :return: ``popgym-RepeatPreviousEasy-v0`` (the gymnasium id) for POPGym,
        ``tmaze-<length>`` for the T-Maze, ``mikasa-<Task>`` for MIKASA-Robo,
        the id itself for any other gymnasium environment
    :raises UnknownEnvError: when nothing matches (the message lists close matches)
    :raises ImportError: for ``mikasa-`` names when ManiSkill3 is not installed
    """
    name = name.strip()
    low = name.lower()
    if low.startswith("popgym-"):
        gym_id = lookup_popgym(name)
        if gym_id is None:
            bases = sorted({n.removesuffix("Easy") for n in popgym_short_names() if n.endswith("Easy")})
            raise _unknown(name, bases + popgym_short_names(), "POPGym environment")
        return gym_id
    if low.startswith("tmaze-"):
        match = _TMAZE_RE.fullmatch(name)
        if match is not None and int(match.group(1)) >= 1:
            return f"tmaze-{int(match.group(1))}"
        if _gym_id(name) is None:  # e.g. "TMaze-v0" is a gymnasium id
            raise UnknownEnvError(f"Unknown T-Maze {name!r}: use tmaze-<corridor length >= 1>, e.g. 'tmaze-100'")
    if low.startswith("mikasa-"):
        return "mikasa-" + _mikasa_task(name).removesuffix("-v0")
    gym_id = _gym_id(name)
    if gym_id is not None:
        return gym_id
    raise _unknown(name, list_env_names() + list(gym.envs.registry))


def env_family(name: str) -> str:
    """
    Family of an environment name (validated, except for ``mikasa-`` names, which
    are classified by prefix so that no ManiSkill3 import is needed).

    :param name: an environment name
    :return: ``"popgym"``, ``"tmaze"``, ``"mikasa"`` or ``"gym"``
    :raises UnknownEnvError: for unknown names
    """
    low = name.strip().lower()
    if low.startswith("mikasa-"):
        return "mikasa"
    canonical = resolve_env_name(name)
    if canonical.startswith("popgym-"):
        return "popgym"
    if canonical.startswith("tmaze-"):
        return "tmaze"
    return "gym"


def list_env_names() -> list[str]:
    """
    :return: names users can type: the 48 ``popgym-<Name><Difficulty>``, T-Maze
        examples, every ``mikasa-<Task>`` when ManiSkill3 is installed (else one
        example), and ``CartPole-v1`` as an example gymnasium id
    """
    names = popgym_short_names() + TMAZE_EXAMPLES
    mikasa_names = ["mikasa-RememberColor3"]
    if importlib.util.find_spec("mani_skill") is not None:
        try:
            _, tasks = _import_mikasa()
            mikasa_names = ["mikasa-" + t.removesuffix("-v0") for t in tasks]
        except ImportError:
            pass
    return names + mikasa_names + ["CartPole-v1"]


def _make_gym_env_fn(
    make: Callable[[], gym.Env], rank: int, seed: int, prev_action: bool, monitor_dir: str | None
) -> Callable[[], gym.Env]:
    """A picklable-by-cloudpickle thunk building env number ``rank`` (Monitor innermost, like SB3)."""

    def _init() -> gym.Env:
        env = make()
        filename = os.path.join(monitor_dir, str(rank)) if monitor_dir is not None else None
        env = Monitor(env, filename=filename)
        env = wrap_env(env, prev_action=prev_action)
        env.action_space.seed(seed + rank)
        return env

    return _init


def make_vec_env(
    name: str,
    n_envs: int = 1,
    seed: int = 0,
    prev_action: bool = True,
    env_kwargs: dict | None = None,
    monitor_dir: str | None = None,
    vec_env_cls: str = "dummy",
) -> VecEnv:
    """
    Build a vectorized environment by name, with the benchmark's wrappers.

    Every env is wrapped in SB3's ``Monitor`` (files ``<rank>.monitor.csv`` in
    ``monitor_dir`` when given); the natively vectorized T-Maze gets a ``VecMonitor``
    (``vec.monitor.csv``, with ``is_success``) instead. Observations are flat
    ``float32`` vectors (see :mod:`envs.wrappers`).

    :param name: environment name (see :func:`resolve_env_name`)
    :param n_envs: number of parallel environments
    :param seed: env ``i`` is seeded with ``seed + i`` at the first reset
    :param prev_action: append the previous action and reward to observations
    :param env_kwargs: keyword arguments for the environment constructor
    :param monitor_dir: directory for monitor files (created if missing)
    :param vec_env_cls: ``"dummy"`` or ``"subproc"`` (ignored by the natively vectorized T-Maze)
    :return: the vectorized environment
    """
    if vec_env_cls not in ("dummy", "subproc"):
        raise ValueError(f"vec_env_cls must be 'dummy' or 'subproc', got {vec_env_cls!r}")
    env_kwargs = dict(env_kwargs or {})
    canonical = resolve_env_name(name)
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)

    if canonical.startswith("mikasa-"):
        make_mikasa_vec_env, _ = _import_mikasa()
        return make_mikasa_vec_env(
            _mikasa_task(canonical),
            n_envs=n_envs,
            seed=seed,
            prev_action=prev_action,
            env_kwargs=env_kwargs,
            monitor_dir=monitor_dir,
            vec_env_cls=vec_env_cls,
        )

    if canonical.startswith("tmaze-"):
        length = int(canonical[len("tmaze-") :])
        venv: VecEnv = TMazeVecEnv(length=length, n_envs=n_envs, prev_action=prev_action, **env_kwargs)
        venv.seed(seed)
        filename = os.path.join(monitor_dir, "vec") if monitor_dir is not None else None
        return VecMonitor(venv, filename=filename, info_keywords=("is_success",))

    if canonical.startswith("popgym-"):

        def make() -> gym.Env:
            return make_popgym_env(canonical, env_kwargs)

    else:

        def make() -> gym.Env:
            return gym.make(canonical, **env_kwargs)

    fns = [_make_gym_env_fn(make, rank, seed, prev_action, monitor_dir) for rank in range(n_envs)]
    venv = DummyVecEnv(fns) if vec_env_cls == "dummy" else SubprocVecEnv(fns)
    venv.seed(seed)
    return venv
