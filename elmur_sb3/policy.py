"""Actor-critic policies whose recurrent part is an ELMUR core (layer memories in place of LSTM states)."""

import dataclasses
import inspect
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from elmur_sb3.core import ElmurConfig, ElmurCore, ElmurCoreState, SegmentStart


class ElmurStates(NamedTuple):
    """Recurrent state of a policy for a batch of envs.

    :param pi: state of the actor's core (also the critic's when the core is shared)
    :param vf: state of the critic's own core, or None when the critic shares the actor's
    """

    pi: ElmurCoreState
    vf: ElmurCoreState | None

    def index(self, rows: th.Tensor | slice) -> "ElmurStates":
        return ElmurStates(self.pi.index(rows), None if self.vf is None else self.vf.index(rows))


def _check_observation_space(observation_space: spaces.Space) -> None:
    supported = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)
    if not isinstance(observation_space, supported):
        raise ValueError(
            f"Unsupported observation space {observation_space}: ELMUR policies take Box, Discrete, MultiDiscrete, "
            "MultiBinary or Dict observations; wrap the env, e.g. with gymnasium.wrappers.FlattenObservation for "
            "Tuple spaces"
        )


class ElmurActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy with an ELMUR core between the features extractor and the MLP heads.

    Arguments not listed are those of SB3's ``ActorCriticPolicy``. The ELMUR arguments are the
    fields of :class:`elmur_sb3.core.ElmurConfig`, passed as keywords; that dataclass is their one
    list and documents them.

    :param shared_core: one core for actor and critic; False (the default, like RecurrentPPO's
        separate critic LSTM) gives the critic its own core
    :param detach_critic: with a shared core, the value head reads the core's output detached, so
        the value loss does not train the core (RecurrentPPO's ``shared_lstm=True`` behaviour)
    :param critic_core_kwargs: ELMUR options in which the critic's own core differs from the actor's;
        every other option is the actor's. None (the default) gives a critic core of one layer at half
        the actor's width (the actor's width where half would not split into ``n_heads`` heads): it
        learned as fast as a copy of the actor's core on three tasks at 3 seeds, at ~1.5x the training
        speed (docs/results, "The small critic core becomes the default"). ``{}`` copies the actor's
        options. ``segment_len`` cannot differ: both cores' segments are cut at the same steps
    :param compile_cores: run the cores' step and segment paths through ``torch.compile`` (TorchInductor,
        symbolic batch sizes), which fuses their many small operations: ~1.2x the training speed on a
        CPU, after a one-off compilation of minutes per process (cached on disk for later processes),
        so it pays on long runs only. Needs a C++ compiler on a CPU. The function is the same to float
        precision; saved models keep the setting
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        shared_core: bool = False,
        detach_critic: bool = False,
        critic_core_kwargs: dict[str, Any] | None = None,
        compile_cores: bool = False,
        **elmur_kwargs: Any,
    ):
        _check_observation_space(observation_space)
        unknown = sorted(set(elmur_kwargs) - set(ELMUR_OPTIONS))
        if unknown:
            raise TypeError(f"unknown ELMUR policy argument(s) {unknown}; the ELMUR options are {list(ELMUR_OPTIONS)}")
        if shared_core and not share_features_extractor:
            raise ValueError(
                "share_features_extractor=False needs a separate critic core (shared_core=False): with a shared "
                "core the critic reads the actor core's output, so its own features extractor would never train"
            )
        if shared_core and critic_core_kwargs:
            raise ValueError("critic_core_kwargs configures the critic's own core: it needs shared_core=False")
        if detach_critic and not shared_core:
            raise ValueError("detach_critic=True only applies to a shared core: set shared_core=True or drop detach_critic")
        self.elmur_config = ElmurConfig(**elmur_kwargs)
        self.critic_config = None if shared_core else _critic_config(self.elmur_config, elmur_kwargs, critic_core_kwargs)
        self.shared_core = shared_core
        self.detach_critic = detach_critic
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class,
            features_extractor_kwargs,
            share_features_extractor,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        self.core_actor = ElmurCore(self.elmur_config, self.features_dim)
        self.core_critic = None if self.critic_config is None else ElmurCore(self.critic_config, self.features_dim)
        self.compile_cores = compile_cores
        if compile_cores:
            for core in (self.core_actor, self.core_critic):
                if core is not None:
                    # Instance attributes shadow the two entry points; parameters and state_dict are untouched.
                    core.step = th.compile(core.step, dynamic=True)
                    core.forward_segment = th.compile(core.forward_segment, dynamic=True)
        # The parent built the optimizer before the cores existed.
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def elmur_options(self) -> dict[str, Any]:
        """The resolved ELMUR options (defaults filled in): enough to rebuild the same cores."""
        actor = dataclasses.asdict(self.elmur_config)
        critic = {} if self.critic_config is None else dataclasses.asdict(self.critic_config)
        critic_core_kwargs = {name: value for name, value in critic.items() if value != actor[name]}
        return dict(actor, shared_core=self.shared_core, detach_critic=self.detach_critic, critic_core_kwargs=critic_core_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), **self.elmur_options(), "compile_cores": self.compile_cores}

    def _build_mlp_extractor(self) -> None:
        def extractor(width: int) -> MlpExtractor:
            return MlpExtractor(width, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device)

        self.mlp_extractor = extractor(self.elmur_config.d_model)
        if self.critic_config is not None and self.critic_config.d_model != self.elmur_config.d_model:
            critic = extractor(self.critic_config.d_model)  # the value MLP reads the critic core's width
            self.mlp_extractor.value_net, self.mlp_extractor.latent_dim_vf = critic.value_net, critic.latent_dim_vf

    # ----------------------------------------------------------------------------------------
    # recurrent state

    def initial_state(self, n_envs: int) -> ElmurStates:
        """State of ``n_envs`` fresh episodes."""
        critic = None if self.core_critic is None else self.core_critic.initial_state(n_envs, self.device)
        return ElmurStates(self.core_actor.initial_state(n_envs, self.device), critic)

    def reset_states(self, states: ElmurStates, episode_starts: th.Tensor) -> ElmurStates:
        """Fresh episode state in the rows where ``episode_starts`` is set, the others untouched."""
        if not bool(episode_starts.any()):
            return states
        critic = None if self.core_critic is None else self.core_critic.reset(states.vf, episode_starts)
        return ElmurStates(self.core_actor.reset(states.pi, episode_starts), critic)

    # ----------------------------------------------------------------------------------------
    # step path: rollouts, predict, evaluation

    def _split_features(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return features, features
        return features

    def _step_latents(
        self, obs: PyTorchObs, states: ElmurStates, episode_starts: th.Tensor, critic: bool = True
    ) -> tuple[th.Tensor, th.Tensor | None, ElmurStates, th.Tensor]:
        """One step of the actor's core and, with ``critic``, of the critic's (else its state is left as it was)."""
        states = self.reset_states(states, episode_starts)
        if not critic:  # the actor's features only
            features = BaseModel.extract_features(self, obs, self.pi_features_extractor)
            latent_pi, pi_state, read_weights = self.core_actor.step(features, states.pi)
            return latent_pi, None, ElmurStates(pi_state, states.vf), read_weights
        pi_features, vf_features = self._split_features(obs)
        latent_pi, pi_state, read_weights = self.core_actor.step(pi_features, states.pi)
        if self.core_critic is None:
            latent_vf, vf_state = self._shared_critic_latent(latent_pi), None
        else:
            latent_vf, vf_state, _ = self.core_critic.step(vf_features, states.vf)
        return latent_pi, latent_vf, ElmurStates(pi_state, vf_state), read_weights

    def _shared_critic_latent(self, latent_pi: th.Tensor) -> th.Tensor:
        return latent_pi.detach() if self.detach_critic else latent_pi

    def forward(
        self, obs: PyTorchObs, states: ElmurStates, episode_starts: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, ElmurStates]:
        """One step for every env.

        :param obs: a batch of observations, one per env
        :param states: the envs' recurrent state
        :param episode_starts: 1 where the observation is an episode's first (state reset first)
        :return: actions, values, log-probabilities and the next state
        """
        latent_pi, latent_vf, states, _ = self._step_latents(obs, states, episode_starts)
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent_pi))
        actions = distribution.get_actions(deterministic=deterministic)
        values = self.value_net(self.mlp_extractor.forward_critic(latent_vf))
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob, states

    def get_distribution(
        self, obs: PyTorchObs, states: ElmurStates, episode_starts: th.Tensor
    ) -> tuple[Distribution, ElmurStates]:
        """The action distribution; only the actor's core steps (acting needs no values), so the
        critic's state in the returned states is left as it was, as RecurrentPPO's ``predict`` leaves
        its critic LSTM."""
        latent_pi, _, states, _ = self._step_latents(obs, states, episode_starts, critic=False)
        return self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent_pi)), states

    def predict_values(self, obs: PyTorchObs, states: ElmurStates, episode_starts: th.Tensor) -> th.Tensor:
        _, latent_vf, _, _ = self._step_latents(obs, states, episode_starts)
        return self.value_net(self.mlp_extractor.forward_critic(latent_vf))

    def _predict(  # type: ignore[override]
        self, observation: PyTorchObs, states: ElmurStates, episode_starts: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, ElmurStates]:
        distribution, states = self.get_distribution(observation, states, episode_starts)
        return distribution.get_actions(deterministic=deterministic), states

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: ElmurStates | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, ElmurStates]:
        """Actions for a batch of observations, as sb3-contrib's recurrent policies do.

        :param observation: observations (one per env, or a single one)
        :param state: the state returned by the previous call (None: fresh episodes)
        :param episode_start: which envs start a new episode with this observation
        :param deterministic: the distribution's mode instead of a sample
        :return: actions and the next state, to pass to the next call
        """
        if self.training:  # switching modes walks every submodule: too slow for a per-step call
            self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        n_envs = len(next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor)
        if state is None:
            state = self.initial_state(n_envs)
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        with th.no_grad():
            starts = th.as_tensor(np.asarray(episode_start), device=self.device).reshape(n_envs)
            actions, state = self._predict(obs_tensor, state, starts, deterministic=deterministic)
        actions = actions.cpu().numpy().reshape((-1, *self.action_space.shape))
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions = self.unscale_action(actions)
            else:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, state

    # ----------------------------------------------------------------------------------------
    # segment path: PPO updates

    def evaluate_chains(
        self,
        obs: PyTorchObs,
        actions: th.Tensor,
        start_times: th.Tensor,
        start_pi: SegmentStart,
        start_vf: SegmentStart | None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor]:
        """Values, log-probs and entropies of chains of consecutive segments of one episode.

        The memory each segment writes, and its tokens as the next segment's attention cache, feed
        the next segment of its chain with gradients (truncated backpropagation through time);
        the chain's start memory and cache are given and carry no gradient.

        :param obs: observations flattened from ``(C, K, L)`` chain-major order
        :param actions: actions in the same order
        :param start_times: ``(C, K)`` episode time of each segment's first step
        :param start_pi: the actor core's memory and cache at each chain's start (batch ``C``)
        :param start_vf: the critic core's, or None when the core is shared
        :return: values, log-probs, entropies (flat, same order) and the read-attention entropy
            of the actor core's last layer ``(C, K, L)`` (a diagnostic)
        """
        pi_features, vf_features = self._split_features(obs)
        latent_pi, read_entropy = self._run_chains(self.core_actor, pi_features, start_times, start_pi)
        if self.core_critic is None:
            latent_vf = self._shared_critic_latent(latent_pi)
        else:
            latent_vf, _ = self._run_chains(self.core_critic, vf_features, start_times, start_vf)
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent_pi))
        values = self.value_net(self.mlp_extractor.forward_critic(latent_vf))
        return values.flatten(), distribution.log_prob(actions), distribution.entropy(), read_entropy

    @staticmethod
    def _run_chains(
        core: ElmurCore, features: th.Tensor, start_times: th.Tensor, start: SegmentStart
    ) -> tuple[th.Tensor, th.Tensor]:
        n_chains, n_segments = start_times.shape
        features = features.reshape(n_chains, n_segments, core.config.segment_len, -1)
        latents, entropies = [], []
        for k in range(n_segments):
            latent, start, read_weights = core.forward_segment(features[:, k], start, start_times[:, k])
            latents.append(latent)
            entropy = -(read_weights * read_weights.clamp_min(1e-12).log()).sum(-1).mean(1)
            entropies.append(entropy.detach())
        return th.stack(latents, 1).flatten(0, 2), th.stack(entropies, 1)


ELMUR_OPTIONS = {field.name: field for field in dataclasses.fields(ElmurConfig)}


def _critic_config(actor: ElmurConfig, elmur_kwargs: dict[str, Any], overrides: dict[str, Any] | None) -> ElmurConfig:
    """The critic core's options: the actor's as given (defaults resolved for the critic's own width) plus
    ``overrides`` (None: the default small critic)."""
    overrides = _default_critic_core_kwargs(actor) if overrides is None else dict(overrides)
    unknown = sorted(set(overrides) - set(ELMUR_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} in critic_core_kwargs; the ELMUR options are {list(ELMUR_OPTIONS)}")
    if overrides.get("segment_len", actor.segment_len) != actor.segment_len:
        raise ValueError(
            f"critic_core_kwargs cannot change segment_len ({overrides['segment_len']} vs the actor's {actor.segment_len}): "
            "both cores' segments are cut at the same steps"
        )
    return ElmurConfig(**{**elmur_kwargs, **overrides})


def _default_critic_core_kwargs(actor: ElmurConfig) -> dict[str, Any]:
    """One layer at half the actor's width, where half splits into the actor's heads."""
    half = actor.d_model // 2
    width = half if half >= actor.n_heads and half % actor.n_heads == 0 else actor.d_model
    return {"d_model": width, "n_layers": 1}


def _signature_with_elmur_options(init: Any) -> inspect.Signature:
    """The constructor's signature with ``**elmur_kwargs`` spelled out as ElmurConfig's fields, so that
    introspection (argument validation, IDEs) sees every option without a second list of names."""
    signature = inspect.signature(init)
    params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.type)
        for name, field in ELMUR_OPTIONS.items()
    ]
    return signature.replace(parameters=params)


ElmurActorCriticPolicy.__init__.__signature__ = _signature_with_elmur_options(ElmurActorCriticPolicy.__init__)  # type: ignore[attr-defined]

MlpElmurPolicy = ElmurActorCriticPolicy


class CnnElmurPolicy(ElmurActorCriticPolicy):
    """ELMUR policy for image observations (SB3's ``NatureCNN`` encoder by default)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputElmurPolicy(ElmurActorCriticPolicy):
    """ELMUR policy for Dict observations (SB3's ``CombinedExtractor`` by default)."""

    def __init__(
        self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any
    ):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
