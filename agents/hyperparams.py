"""Hyperparameter presets (YAML, one file per env family) and ``--hp`` overrides.

A preset file (``agents/hyperparams/<family>.yml``) has these sections::

    protocol:   # the experimental protocol, identical for every algorithm (budget, n_envs, evaluation)
    common:     # PPO hyperparameters shared by every algorithm (n_steps, batch_size, gamma, ...)
    ppo-elmur:  # per algorithm: policy_kwargs and the algorithm's own keywords (e.g. bptt_segments)
    ppo-lstm:
    ppo:
    envs:       # per-env overrides: {env name or fnmatch pattern: {protocol:, common:, <algo>:}}

``default.yml`` is read first, the family file is merged over it, then every matching ``envs:``
entry (default's, then the family's, in file order), then ``--hp`` overrides, then explicit flags.
Nested mappings (``policy_kwargs``, ``env_kwargs``) are merged key by key.

To keep comparisons fair, an algorithm section may not change a shared key (one of
:data:`SHARED_KEYS`) unless it also says why, in ``differs_because: {key: reason}``;
:func:`load_hyperparams` enforces this.

The resolved hyperparameters are one flat mapping: the protocol keys, ``policy``,
``policy_kwargs`` and the algorithm's constructor keywords.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import yaml

from agents.registry import ALGOS, AlgoSpec, get_algo

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

# Keys of the experimental protocol; the runner consumes them, they never reach the algorithm.
PROTOCOL_KEYS: dict[str, str] = {
    "n_timesteps": "training budget in env steps (all envs together)",
    "n_envs": "number of parallel training envs",
    "eval_freq": "evaluate every this many env steps (all envs together); 0 = only at the end",
    "eval_episodes": "episodes per evaluation",
    "n_eval_envs": "parallel envs of the evaluation VecEnv",
    "eval_deterministic": "evaluate with the deterministic (greedy) policy",
    "checkpoint_freq": "save a checkpoint every this many env steps (all envs together)",
    "normalize": "wrap the envs in VecNormalize (false, true, or a dict of VecNormalize kwargs)",
    "prev_action": "add the previous action (and reward) to the observation (--no-prev-action = false)",
    "env_kwargs": "keyword arguments of the env constructor",
    "policy": "policy name; null = chosen from the observation space",
}

# PPO hyperparameters every algorithm shares; changing one for a single algorithm needs a reason.
SHARED_ALGO_KEYS = frozenset(
    {
        "learning_rate",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gamma",
        "gae_lambda",
        "clip_range",
        "clip_range_vf",
        "normalize_advantage",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "target_kl",
        "stats_window_size",
    }
)
SHARED_KEYS = SHARED_ALGO_KEYS | (set(PROTOCOL_KEYS) - {"policy"})

SECTION_KEYS = ("protocol", "common", "envs")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class HyperparamError(ValueError):
    """A bad preset or ``--hp`` override; the message is one line and names the valid keys."""


class Override(NamedTuple):
    """
    One parsed ``--hp`` item.

    :param parts: the dotted key split into its parts, e.g. ``("policy_kwargs", "segment_len")``
    :param value: the parsed value
    :param text: the ``key=value`` item as typed, recorded in config.yml so that a run can be repeated
    :param algo: the algorithm it is limited to (``<algo>:key=value``), or None for every algorithm
    """

    parts: tuple[str, ...]
    value: Any
    text: str
    algo: str | None = None

    def applies_to(self, algo: str) -> bool:
        """:return: whether the override is meant for ``algo`` (a registry name)"""
        return self.algo is None or self.algo == algo


def family_file(family: str) -> Path:
    """
    :param family: an env family (``envs.env_family``): popgym, tmaze, mikasa or gym
    :return: its preset file; families without one (plain gym ids) use ``default.yml``
    """
    path = HYPERPARAMS_DIR / f"{family}.yml"
    return path if path.exists() else HYPERPARAMS_DIR / "default.yml"


def _read_yaml(path: Path) -> dict[str, Any]:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise HyperparamError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - set(SECTION_KEYS) - set(ALGOS)
    if unknown:
        raise HyperparamError(f"{path}: unknown section(s) {sorted(unknown)}; valid: {', '.join(SECTION_KEYS + tuple(ALGOS))}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """
    :param base: the mapping to update (not modified)
    :param update: values that win; nested mappings are merged key by key
    :return: the merged copy
    """
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_layer(resolved: dict[str, Any], layer: dict[str, Any], algo: str, where: str) -> dict[str, Any]:
    """Merge one ``{protocol:, common:, <algo>:}`` layer for ``algo`` into ``resolved``."""
    for section in ("protocol", "common"):
        values = layer.get(section) or {}
        if section == "protocol":
            unknown = set(values) - set(PROTOCOL_KEYS)
            if unknown:
                raise HyperparamError(f"{where}: unknown protocol key(s) {sorted(unknown)}; valid: {', '.join(PROTOCOL_KEYS)}")
        resolved = deep_merge(resolved, values)
    algo_values = dict(layer.get(algo) or {})
    reasons = algo_values.pop("differs_because", {}) or {}
    unjustified = sorted(k for k in algo_values if k in SHARED_KEYS and k not in reasons)
    if unjustified:
        raise HyperparamError(
            f"{where}: section {algo!r} changes shared key(s) {unjustified} without a 'differs_because' entry; "
            "every algorithm must get the same protocol unless a reason is given"
        )
    if reasons:
        resolved.setdefault("_differs_because", {}).update(reasons)
    return deep_merge(resolved, algo_values)


def load_hyperparams(family: str, env_name: str, algo: str) -> dict[str, Any]:
    """
    Resolve the preset for one (env, algorithm) pair.

    :param family: the env family, which picks the preset file
    :param env_name: the resolved env name, matched against the ``envs:`` entries (fnmatch patterns)
    :param algo: the registry name of the algorithm
    :return: the flat hyperparameter mapping (protocol keys, ``policy``, ``policy_kwargs``, algorithm keywords);
        ``_differs_because`` and ``_sources`` record the documented differences and the files read
    """
    default_path = HYPERPARAMS_DIR / "default.yml"
    paths = [default_path]
    fam_path = family_file(family)
    if fam_path != default_path:
        paths.append(fam_path)
    resolved: dict[str, Any] = {"policy": None, "policy_kwargs": {}, "env_kwargs": {}}
    files = [(p, _read_yaml(p)) for p in paths]
    for path, data in files:
        resolved = _apply_layer(resolved, data, algo, str(path.name))
    for path, data in files:
        for pattern, layer in (data.get("envs") or {}).items():
            if fnmatch.fnmatchcase(env_name, pattern):
                resolved = _apply_layer(resolved, layer or {}, algo, f"{path.name} envs[{pattern}]")
    resolved["_sources"] = [p.name for p in paths]
    return resolved


def parse_overrides(items: Sequence[str] | None) -> list[Override]:
    """
    Parse ``--hp`` items such as ``n_steps=256`` or ``policy_kwargs.segment_len=32``; the command line
    does this once, and everything downstream (``compare``'s runs included) receives the result.

    :param items: the raw ``key=value`` strings, each optionally prefixed ``<algo>:`` to apply to that algorithm only
    :return: the overrides; values are parsed with ``yaml.safe_load``, so ``3e-4`` is a float (YAML 1.1
        needs ``3.0e-4``; a bare ``3e-4`` is also converted), ``[64, 64]`` a list, ``null`` None
    """
    parsed = []
    for item in items or []:
        head, sep, rest = item.partition(":")
        algo = None
        if sep and "=" not in head:  # "<algo>:key=value"; a ":" after the "=" belongs to the value
            algo, item = get_algo(head).name, rest
        if "=" not in item:
            raise HyperparamError(f"--hp expects key=value, got {item!r} (e.g. --hp n_steps=256 policy_kwargs.segment_len=32)")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            raise HyperparamError(f"--hp: malformed key {key!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise HyperparamError(f"--hp {key}: cannot parse value {raw!r} ({str(exc).splitlines()[0]})") from exc
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            # YAML 1.1 reads "3e-4" (no dot) as a string; users mean a number.
            value = float(value)
        parsed.append(Override(tuple(parts), value, item, algo))
    return parsed


def valid_top_level_keys(spec: AlgoSpec) -> list[str]:
    """
    :param spec: the algorithm
    :return: every key a preset or ``--hp`` may set at the top level for it, sorted
    """
    return sorted(set(PROTOCOL_KEYS) | spec.algo_kwarg_names())


def apply_overrides(hyperparams: dict[str, Any], overrides: Sequence[Override], spec: AlgoSpec) -> dict[str, Any]:
    """
    Apply ``--hp`` overrides; top-level keys are checked against the protocol keys and the
    algorithm's constructor (``policy_kwargs.*`` keys are checked later by :func:`validate_policy_kwargs`,
    once the observation space fixes the policy).

    :param hyperparams: the resolved preset
    :param overrides: from :func:`parse_overrides`; those limited to another algorithm are skipped
    :param spec: the algorithm
    :return: the updated copy
    :raises HyperparamError: on an unknown key, naming the valid ones
    """
    out = copy.deepcopy(hyperparams)
    valid = valid_top_level_keys(spec)
    for override in overrides:
        if not override.applies_to(spec.name):
            continue
        parts, value = override.parts, override.value
        top = parts[0]
        if top not in valid:
            raise HyperparamError(f"unknown --hp key {top!r} for {spec.name}; valid keys: {', '.join(valid)}")
        if len(parts) > 1 and not isinstance(out.get(top), (dict, type(None))):
            raise HyperparamError(f"--hp {'.'.join(parts)}: {top} is not a mapping")
        target = out
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return out


def validate_hyperparams(hyperparams: dict[str, Any], spec: AlgoSpec) -> None:
    """
    Check a resolved mapping's top-level keys against the algorithm (catches typos in presets).

    :param hyperparams: resolved hyperparameters
    :param spec: the algorithm
    :raises HyperparamError: on an unknown key
    """
    valid = set(valid_top_level_keys(spec))
    unknown = sorted(k for k in hyperparams if not k.startswith("_") and k not in valid)
    if unknown:
        raise HyperparamError(f"unknown hyperparameter(s) {unknown} for {spec.name}; valid keys: {', '.join(sorted(valid))}")


def validate_policy_kwargs(policy_kwargs: dict[str, Any], spec: AlgoSpec, policy: str) -> None:
    """
    Check ``policy_kwargs`` keys against the policy constructor's signature.

    :param policy_kwargs: the keys to check
    :param spec: the algorithm
    :param policy: the policy name that will be built
    :raises HyperparamError: on an unknown key, naming the valid ones
    """
    valid = spec.policy_kwarg_names(policy)
    if valid is None:  # the constructor takes **kwargs: nothing can be rejected up front
        return
    unknown = sorted(set(policy_kwargs) - valid)
    if unknown:
        raise HyperparamError(
            f"unknown policy_kwargs key(s) {unknown} for {spec.name} ({policy}); valid keys: {', '.join(sorted(valid))}"
        )


_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU", "silu": "SiLU", "leaky_relu": "LeakyReLU"}


def _import_object(path: str) -> Any:
    """Import ``"pkg.mod:Name"`` or ``"pkg.mod.Name"``."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


# Keys that take a number or a schedule; ``lin_<initial>`` decays linearly to 0 (rl-zoo3's notation).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")


def _schedule(key: str, value: Any) -> Any:
    """
    :param key: one of :data:`SCHEDULE_KEYS`
    :param value: a number, ``lin_<number>``, or None (``clip_range_vf`` only)
    :return: the value SB3 takes: the number, or SB3's linear schedule (``LinearSchedule``)
    :raises HyperparamError: for anything else, in one line
    """
    try:
        from stable_baselines3.common.utils import LinearSchedule
    except ImportError:  # SB3 < 2.6
        from stable_baselines3.common.utils import get_linear_fn as LinearSchedule

    if isinstance(value, bool):
        pass  # a YAML "true" is no learning rate
    elif isinstance(value, (int, float)) or (value is None and key == "clip_range_vf"):
        return value
    elif isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            pass
    raise HyperparamError(f"{key} must be a number or lin_<initial value> (decays linearly to 0), e.g. {key}=3e-4; got {value!r}")


def to_constructor_kwargs(hyperparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split resolved hyperparameters into the algorithm's keywords and the protocol, turning the
    YAML-friendly strings into Python objects: ``activation_fn: relu`` -> ``torch.nn.ReLU``,
    ``*_class: "pkg.mod:Name"`` -> the class, ``learning_rate: lin_3e-4`` -> a linear schedule.

    :param hyperparams: resolved hyperparameters
    :return: ``(algorithm kwargs, protocol)``
    :raises HyperparamError: for a schedule key that is neither a number nor ``lin_<number>``
    """
    import torch.nn as nn

    algo_kwargs = {k: copy.deepcopy(v) for k, v in hyperparams.items() if k not in PROTOCOL_KEYS and not k.startswith("_")}
    protocol = {k: copy.deepcopy(hyperparams.get(k)) for k in PROTOCOL_KEYS}
    pk = algo_kwargs.get("policy_kwargs") or {}
    for key, value in list(pk.items()):
        if key == "activation_fn" and isinstance(value, str):
            name = _ACTIVATIONS.get(value.lower(), value)
            pk[key] = getattr(nn, name) if hasattr(nn, name) else _import_object(value)
        elif key.endswith("_class") and isinstance(value, str):
            pk[key] = _import_object(value)
    algo_kwargs["policy_kwargs"] = pk
    for key in SCHEDULE_KEYS:
        if key in algo_kwargs:
            algo_kwargs[key] = _schedule(key, algo_kwargs[key])
    return algo_kwargs, protocol
