"""Algorithm registry: the names ``--algo`` accepts and how each one is built.

Every entry is an on-policy PPO variant, so they share one set of constructor keywords
(``n_steps``, ``batch_size``, ...) and differ in the policy that carries (or does not carry)
memory:

- ``ppo-elmur``: :class:`elmur_sb3.PPOElmur`, a transformer whose layers own an external memory;
- ``ppo-lstm``: sb3-contrib's :class:`~sb3_contrib.RecurrentPPO` with an LSTM policy;
- ``ppo``: Stable-Baselines3's :class:`~stable_baselines3.PPO` with a memoryless MLP (a lower bound).

The registry is also where a policy name is checked against an algorithm, and where a saved zip
is traced back to the algorithm that saved it (through the policy classes each algorithm owns).

Algorithm classes are imported lazily, inside :meth:`AlgoSpec.load_class`, so that the command
line (and the error messages for bad names) works even when one library fails to import.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gymnasium import spaces

# Keywords the runner passes itself (from flags or the run directory); a preset or ``--hp`` may not set them.
RUNNER_MANAGED_KWARGS = frozenset({"self", "policy", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"})
# Constructor parameters of the policies that the algorithm fills in itself.
POLICY_POSITIONAL_KWARGS = frozenset({"self", "observation_space", "action_space", "lr_schedule"})


class UnknownAlgoError(ValueError):
    """Raised for an ``--algo`` name that is not registered; the message names the closest valid ones."""


class AlgoImportError(RuntimeError):
    """Raised when the library that provides an algorithm cannot be imported."""


class UnknownPolicyError(ValueError):
    """Raised for a policy name the algorithm does not register; the message names the valid ones."""


@dataclass(frozen=True)
class AlgoSpec:
    """
    How to build one registered algorithm.

    :param name: the ``--algo`` name
    :param class_path: ``"module:ClassName"`` of the algorithm, imported on first use
    :param policies: policy name per observation kind: ``"mlp"`` (flat vectors), ``"cnn"`` (images),
        ``"multi_input"`` (``Dict`` spaces)
    :param description: one line for ``--help`` and the docs
    :param recurrent: whether ``predict`` carries a state between calls
    """

    name: str
    class_path: str
    policies: dict[str, str] = field(default_factory=dict)
    description: str = ""
    recurrent: bool = True

    def load_class(self) -> type:
        """
        Import and return the algorithm class.

        :return: the class, e.g. ``RecurrentPPO``
        :raises AlgoImportError: when its package cannot be imported (the message says which)
        """
        module_name, class_name = self.class_path.split(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, class_name)
        except (ImportError, AttributeError) as exc:
            raise AlgoImportError(f"--algo {self.name} needs {self.class_path.replace(':', '.')}, which failed to import: {exc}") from exc

    def policy_for(self, observation_space: spaces.Space) -> str:
        """
        Choose the policy from the observation space, as rl-zoo3 users would by hand.

        :param observation_space: the (vectorized) env's observation space
        :return: the registered policy name, e.g. ``"MultiInputLstmPolicy"`` for a ``Dict`` space
        """
        from stable_baselines3.common.preprocessing import is_image_space

        if isinstance(observation_space, spaces.Dict):
            return self.policies["multi_input"]
        if is_image_space(observation_space, check_channels=False):
            return self.policies["cnn"]
        return self.policies["mlp"]

    @property
    def policy_aliases(self) -> dict[str, type]:
        """The policy names the algorithm registers and their classes (SB3's ``policy_aliases``)."""
        return dict(getattr(self.load_class(), "policy_aliases", {}))

    def policy_class(self, policy: str) -> type:
        """
        Resolve a policy name to its class through the algorithm's ``policy_aliases``.

        :param policy: a policy name such as ``"MlpLstmPolicy"``
        :return: the policy class
        :raises UnknownPolicyError: for a name the algorithm does not register
        """
        aliases = self.policy_aliases
        if policy not in aliases:
            raise UnknownPolicyError(f"unknown policy {policy!r} for {self.name}; valid: {', '.join(sorted(aliases))}")
        return aliases[policy]

    def saved(self, policy_class: Any) -> bool:
        """
        :param policy_class: the ``policy_class`` recorded in a saved model's data
        :return: whether a model of this algorithm saved it (its policy is one this algorithm registers)
        """
        return any(policy_class is cls for cls in self.policy_aliases.values())

    def algo_kwarg_names(self) -> set[str]:
        """
        :return: the constructor keywords a preset or ``--hp`` may set for this algorithm
            (its ``__init__`` parameters, minus those the runner manages itself)
        """
        return _init_params(self.load_class()) - RUNNER_MANAGED_KWARGS

    def policy_kwarg_names(self, policy: str) -> set[str] | None:
        """
        :param policy: the policy name
        :return: the ``policy_kwargs`` keys that policy accepts, or ``None`` when its constructor
            takes ``**kwargs`` all the way up (then no key can be rejected up front)
        """
        return _init_params(self.policy_class(policy), stop_at_var_kwargs=True) - POLICY_POSITIONAL_KWARGS


def _init_params(cls: type, stop_at_var_kwargs: bool = False) -> Any:
    """
    Collect the named ``__init__`` parameters of ``cls``; where an ``__init__`` forwards ``**kwargs``
    to its parent, the parent's parameters are valid too, so walk up the MRO.

    :param cls: the class to inspect
    :param stop_at_var_kwargs: return ``None`` when the chain ends in a bare ``**kwargs`` (nothing to validate)
    :return: the parameter names
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            break
        params = inspect.signature(init).parameters
        names.update(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
    if stop_at_var_kwargs:
        return None
    return names


ALGOS: dict[str, AlgoSpec] = {
    spec.name: spec
    for spec in (
        AlgoSpec(
            name="ppo-elmur",
            class_path="elmur_sb3:PPOElmur",
            policies={"mlp": "MlpElmurPolicy", "cnn": "CnnElmurPolicy", "multi_input": "MultiInputElmurPolicy"},
            description="PPO with ELMUR, a transformer with per-layer external memory (elmur_sb3)",
        ),
        AlgoSpec(
            name="ppo-lstm",
            class_path="sb3_contrib:RecurrentPPO",
            policies={"mlp": "MlpLstmPolicy", "cnn": "CnnLstmPolicy", "multi_input": "MultiInputLstmPolicy"},
            description="sb3-contrib RecurrentPPO (LSTM policy), the recurrent baseline",
        ),
        AlgoSpec(
            name="ppo",
            class_path="stable_baselines3:PPO",
            policies={"mlp": "MlpPolicy", "cnn": "CnnPolicy", "multi_input": "MultiInputPolicy"},
            description="Stable-Baselines3 PPO with a memoryless MLP (lower bound)",
            recurrent=False,
        ),
    )
}


def get_algo(name: str) -> AlgoSpec:
    """
    :param name: an ``--algo`` name (case-insensitive)
    :return: its spec
    :raises UnknownAlgoError: with the closest valid names
    """
    spec = ALGOS.get(name.lower())
    if spec is None:
        # Imported here: the envs package pulls in torch, which --help and valid names need not wait for.
        from envs.registry import closest_names

        suggestions = ", ".join(closest_names(name, list(ALGOS), cutoff=0.4) or list(ALGOS)[:3])
        raise UnknownAlgoError(f"unknown algo {name!r}; did you mean: {suggestions}? (valid: {', '.join(ALGOS)})")
    return spec


def algo_that_saved(model_path: Path) -> AlgoSpec | None:
    """
    Tell which registered algorithm saved a model zip, from the policy class SB3 recorded in it.

    :param model_path: a file that should be a zip written by ``model.save``
    :return: the algorithm's spec, or None when the file is not a readable SB3 model zip or its policy
        belongs to no registered algorithm
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    try:
        data, _, _ = load_from_zip_file(model_path, device="cpu")
    except Exception:  # noqa: BLE001 - whatever stops SB3 from reading it, the file is no usable model zip
        return None
    policy_class = (data or {}).get("policy_class")
    for spec in ALGOS.values():
        try:
            if spec.saved(policy_class):
                return spec
        except AlgoImportError:
            continue
    return None
