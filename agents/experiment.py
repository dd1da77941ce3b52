"""What defines one run: the :class:`Experiment`, resolved from names, the preset and the overrides, or read back from a run's config."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from gymnasium import spaces

from agents.hyperparams import (
    HyperparamError,
    Override,
    apply_overrides,
    load_hyperparams,
    to_constructor_kwargs,
    validate_hyperparams,
    validate_policy_kwargs,
)
from agents.registry import AlgoSpec, get_algo
from agents.scores import metric_for


@dataclass
class Experiment:
    """
    Everything that defines a run, resolved and validated.

    :param env: resolved env name
    :param env_requested: the name as the user typed it
    :param family: env family (popgym, tmaze, mikasa, gym)
    :param algo: registry name of the algorithm
    :param seed: random seed
    :param eval_env: resolved evaluation env name (the training env unless ``--eval-env``)
    :param hyperparams: the flat resolved hyperparameters (protocol + algorithm keywords)
    :param hp_overrides: the ``--hp`` items as typed, recorded for reproducibility
    """

    env: str
    env_requested: str
    family: str
    algo: str
    seed: int
    eval_env: str
    hyperparams: dict[str, Any]
    hp_overrides: list[str] = field(default_factory=list)

    @property
    def spec(self) -> AlgoSpec:
        return get_algo(self.algo)

    @property
    def metric(self) -> str:
        """The headline metric (see :func:`agents.scores.metric_for`)."""
        return metric_for(self.family)

    def with_policy(self, observation_space: spaces.Space) -> Experiment:
        """
        Fix the policy: the preset's, or the one the algorithm uses for this observation space.

        :param observation_space: the training env's observation space
        :return: a copy whose ``hyperparams["policy"]`` is set and whose ``policy_kwargs`` are valid for it
        :raises UnknownPolicyError, HyperparamError: for a policy or policy_kwargs the algorithm does not know
        """
        spec = self.spec
        policy = self.hyperparams.get("policy") or spec.policy_for(observation_space)
        validate_policy_kwargs(self.hyperparams.get("policy_kwargs") or {}, spec, policy)
        return replace(self, hyperparams={**copy.deepcopy(self.hyperparams), "policy": policy})


def resolve_experiment(
    env: str,
    algo: str,
    seed: int = 0,
    overrides: Sequence[Override] | None = None,
    eval_env: str | None = None,
    timesteps: int | None = None,
    n_envs: int | None = None,
    eval_freq: int | None = None,
    eval_episodes: int | None = None,
    prev_action: bool | None = None,
) -> Experiment:
    """
    Resolve names, load the preset and apply overrides (``--hp`` first, then the explicit flags).

    :param env: ``--env`` as typed
    :param algo: ``--algo``
    :param seed: ``--seed``
    :param overrides: the parsed ``--hp`` items (:func:`agents.hyperparams.parse_overrides`)
    :param eval_env: ``--eval-env`` as typed, or None for the training env
    :param timesteps: ``--timesteps`` (overrides ``n_timesteps``)
    :param n_envs: ``--n-envs``
    :param eval_freq: ``--eval-freq`` in env steps
    :param eval_episodes: ``--eval-episodes``
    :param prev_action: False for ``--no-prev-action``
    :return: the experiment
    :raises UnknownAlgoError, envs.UnknownEnvError, HyperparamError: on bad input
    """
    import envs

    overrides = list(overrides or [])
    spec = get_algo(algo)  # algo first: its error is the cheaper one
    env_name = envs.resolve_env_name(env)
    eval_name = envs.resolve_env_name(eval_env) if eval_env else env_name
    family = envs.env_family(env_name)
    hyperparams = load_hyperparams(family, env_name, spec.name)
    validate_hyperparams(hyperparams, spec)
    hyperparams = apply_overrides(hyperparams, overrides, spec)
    for key, value in (
        ("n_timesteps", timesteps),
        ("n_envs", n_envs),
        ("eval_freq", eval_freq),
        ("eval_episodes", eval_episodes),
        ("prev_action", prev_action),
    ):
        if value is not None:
            hyperparams[key] = value
    check_protocol(hyperparams)
    to_constructor_kwargs(hyperparams)  # fails now, in one line, on values the algorithm could not take
    return Experiment(
        env=env_name,
        env_requested=env,
        family=family,
        algo=spec.name,
        seed=seed,
        eval_env=eval_name,
        hyperparams=hyperparams,
        hp_overrides=[o.text for o in overrides if o.applies_to(spec.name)],
    )


def flags_of(args: Any) -> dict[str, Any]:
    """
    :param args: parsed ``train.py`` or ``compare`` flags (``--timesteps``, ``--n-envs``, ``--eval-freq``,
        ``--eval-episodes``, ``--eval-env``, ``--no-prev-action``)
    :return: them as keywords of :func:`resolve_experiment`
    """
    return dict(
        eval_env=args.eval_env,
        timesteps=args.timesteps,
        n_envs=args.n_envs,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        prev_action=False if args.no_prev_action else None,
    )


def check_protocol(hp: dict[str, Any]) -> None:
    """
    :param hp: resolved hyperparameters
    :raises HyperparamError: when a protocol key has a value the runner cannot use
    """
    for key in ("n_timesteps", "n_envs", "eval_episodes", "n_eval_envs"):
        if not isinstance(hp.get(key), int) or hp[key] < 1:
            raise HyperparamError(f"{key} must be a positive integer, got {hp.get(key)!r}")
    for key in ("eval_freq", "checkpoint_freq"):
        if not isinstance(hp.get(key), int) or hp[key] < 0:
            raise HyperparamError(f"{key} must be a non-negative integer (env steps), got {hp.get(key)!r}")
    if not isinstance(hp.get("env_kwargs"), dict):
        raise HyperparamError(f"env_kwargs must be a mapping, got {hp.get('env_kwargs')!r}")


def experiment_from_config(config: dict[str, Any]) -> Experiment:
    """Rebuild the :class:`Experiment` recorded in a run's ``config.yml``."""
    return Experiment(
        env=config["env"],
        env_requested=config.get("env_requested", config["env"]),
        family=config["family"],
        algo=config["algo"],
        seed=int(config["seed"]),
        eval_env=config.get("eval_env", config["env"]),
        hyperparams=dict(config["hyperparams"]),
        hp_overrides=list(config.get("hp_overrides", [])),
    )
