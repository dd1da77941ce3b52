"""PPO-ELMUR: proximal policy optimisation with an ELMUR recurrent policy."""

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from elmur_sb3.buffer import ElmurRolloutBuffer
from elmur_sb3.policy import CnnElmurPolicy, ElmurActorCriticPolicy, ElmurStates, MlpElmurPolicy, MultiInputElmurPolicy

SelfPPOElmur = TypeVar("SelfPPOElmur", bound="PPOElmur")


# ELMUR options added after models were first saved, with the value such models were trained with
# (0.1 saved only the options a user set; later versions save all of them).
_OPTIONS_ADDED_LATER = {"cache_len": 0, "shared_core": True, "alibi_init": False, "critic_core_kwargs": {}}


class PPOElmur(OnPolicyAlgorithm):
    """Proximal Policy Optimization with an ELMUR policy (a transformer with per-layer memory).

    Used like sb3-contrib's ``RecurrentPPO``; the layer memories take the place of the LSTM
    states and are reset at every episode start. Updates run on chains of up to
    ``bptt_segments`` consecutive segments of one episode: each chain starts from the memory
    stored during the rollout, and inside it the memory written by a segment feeds the next
    with gradients. ``bptt_segments=1`` is the paper's detached training (the memory write
    path gets no gradient).

    :param policy: the policy (``MlpElmurPolicy``, ``CnnElmurPolicy``, ``MultiInputElmurPolicy``)
    :param env: the environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate, constant or a schedule of the remaining progress
    :param n_steps: steps per env per rollout
    :param batch_size: env steps per minibatch (whole chains; at least one segment)
    :param n_epochs: epochs over the rollout per update
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :param clip_range: PPO clipping parameter, constant or a schedule
    :param clip_range_vf: value clipping parameter (None: no value clipping)
    :param normalize_advantage: normalise advantages per minibatch
    :param ent_coef: entropy coefficient
    :param vf_coef: value loss coefficient
    :param max_grad_norm: gradient clipping norm
    :param use_sde: generalized State-Dependent Exploration (gSDE) instead of action noise, for Box actions
    :param sde_sample_freq: sample a new gSDE noise matrix every n steps (-1: only at the rollout start)
    :param target_kl: stop an update's epochs early when the approximate KL exceeds it
    :param bptt_segments: segments per training chain (``K``); gradients flow through the memory inside a chain
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no logging)
    :param policy_kwargs: arguments of the policy (ELMUR sizes among them)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: random seed
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpElmurPolicy": MlpElmurPolicy,
        "CnnElmurPolicy": CnnElmurPolicy,
        "MultiInputElmurPolicy": MultiInputElmurPolicy,
    }
    policy: ElmurActorCriticPolicy
    rollout_buffer: ElmurRolloutBuffer

    def __init__(
        self,
        policy: str | type[ElmurActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int = 512,
        n_epochs: int = 4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        bptt_segments: int = 2,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if not isinstance(bptt_segments, int) or bptt_segments < 1:
            raise ValueError(f"bptt_segments must be an integer >= 1, got {bptt_segments!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.bptt_segments = bptt_segments
        self._last_elmur_states: ElmurStates | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        if not isinstance(self.policy, ElmurActorCriticPolicy):
            raise ValueError(f"PPOElmur needs an ElmurActorCriticPolicy, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        # Record the resolved ELMUR options, so a saved model rebuilds this network whatever later defaults are.
        self.policy_kwargs = {**self.policy_kwargs, **self.policy.elmur_options()}
        segment_len = self.policy.elmur_config.segment_len
        if self.batch_size < segment_len:
            raise ValueError(
                f"batch_size ({self.batch_size}) cannot hold one segment of segment_len={segment_len} steps: "
                f"use batch_size >= {segment_len} (or a shorter segment_len)"
            )
        self._last_elmur_states = self.policy.initial_state(self.n_envs)
        self.rollout_buffer = ElmurRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            segment_len=segment_len,
            bptt_segments=self.bptt_segments,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError("clip_range_vf must be positive; pass None to disable value clipping")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, **kwargs):  # type: ignore[no-untyped-def]
        """SB3's ``load``. A saved model records every ELMUR option that existed when it was saved;
        options added since then load with the value it was trained with, not today's default:
        0.1 models ``cache_len=0`` and ``shared_core=True``, models before ``alibi_init`` ``False``, models
        before ``critic_core_kwargs`` a critic core that copies the actor's (``{}``)."""
        data, _, _ = load_from_zip_file(path, device="cpu", custom_objects=custom_objects)
        if hasattr(path, "seek"):
            path.seek(0)
        saved = (data or {}).get("policy_kwargs", {})
        trained_with = {key: value for key, value in _OPTIONS_ADDED_LATER.items() if key not in saved}
        if trained_with:
            custom_objects = {**(custom_objects or {}), "policy_kwargs": {**trained_with, **saved}}
        return super().load(path, env=env, device=device, custom_objects=custom_objects, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_elmur_states"]

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset)
        # The states and carried-over segments belonged to the old env's episodes.
        if self.policy is not None:
            self._last_elmur_states = self.policy.initial_state(self.n_envs)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Collect ``n_rollout_steps`` steps per env with the step path and fill the buffer.

        :return: False if a callback stopped the rollout early
        """
        assert isinstance(rollout_buffer, ElmurRolloutBuffer)
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        segment_len = self.policy.elmur_config.segment_len
        states = self._last_elmur_states
        if states is None or len(states.pi.episode_time) != env.num_envs:
            states = self.policy.initial_state(env.num_envs)
        no_starts = th.zeros(env.num_envs, dtype=th.bool, device=self.device)
        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)
                starts = th.as_tensor(self._last_episode_starts, device=self.device).bool()
                states = self.policy.reset_states(states, starts)
                episode_time = states.pi.episode_time
                # The first step records every env (its segment may have begun in the last rollout).
                segment_start = (episode_time % segment_len == 0) | (n_steps == 0)
                envs = segment_start.nonzero()[:, 0].cpu().numpy()
                if len(envs):
                    rollout_buffer.add_segment_start(envs, states.pi.start, None if states.vf is None else states.vf.start)
                actions, values, log_probs, next_states = self.policy(obs_tensor, states, no_starts)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # Truncated episodes bootstrap from the final observation's value under that env's own state.
            for idx, done in enumerate(dones):
                terminal_obs = infos[idx].get("terminal_observation")
                if done and terminal_obs is not None and infos[idx].get("TimeLimit.truncated", False):
                    with th.no_grad():
                        terminal_obs_tensor = self.policy.obs_to_tensor(terminal_obs)[0]
                        terminal_value = self.policy.predict_values(
                            terminal_obs_tensor, next_states.index(slice(idx, idx + 1)), no_starts[:1]
                        )[0]
                    rewards[idx] += self.gamma * terminal_value.item()

            rollout_buffer.add(
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
                episode_time=episode_time.cpu().numpy(),
            )
            self._last_obs = new_obs
            self._last_episode_starts = dones
            states = next_states

        self._last_elmur_states = states
        with th.no_grad():
            values = self.policy.predict_values(
                obs_as_tensor(new_obs, self.device), states, th.as_tensor(dones, device=self.device)
            )
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        rollout_buffer.carry_over(states.pi.episode_time.cpu().numpy(), dones)
        self._record_memory_stats(states)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _record_memory_stats(self, states: ElmurStates) -> None:
        times = states.pi.memory.times
        filled = times >= 0
        self.logger.record("elmur/slots_filled", filled.float().mean().item())
        if bool(filled.any()):
            age = (states.pi.episode_time[:, None] - times)[filled]
            self.logger.record("elmur/mean_slot_age", age.float().mean().item())

    def train(self) -> None:
        """One PPO update on the collected rollout, chain by chain through the segment path."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)
        entropy_losses, pg_losses, value_losses, clip_fractions, read_entropies, grad_norms = [], [], [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for data in self.rollout_buffer.get(self.batch_size):
                if self.use_sde:
                    self.policy.reset_noise(self.batch_size)
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                mask = data.loss_mask
                values, log_prob, entropy, read_entropy = self.policy.evaluate_chains(
                    data.observations, actions, data.start_times, data.start_pi, data.start_vf
                )
                read_entropies.append(read_entropy.flatten()[mask].mean().item())
                advantages = data.advantages
                if self.normalize_advantage and int(mask.sum()) > 1:
                    advantages = (advantages - advantages[mask].mean()) / (advantages[mask].std() + 1e-8)

                log_ratio = log_prob - data.old_log_prob
                ratio = th.exp(log_ratio)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2)[mask].mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(((ratio - 1).abs() > clip_range).float()[mask].mean().item())

                values_pred = values
                if clip_range_vf is not None:
                    values_pred = data.old_values + th.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                value_loss = ((data.returns - values_pred) ** 2)[mask].mean()
                value_losses.append(value_loss.item())

                entropy_loss = -(-log_prob[mask]).mean() if entropy is None else -entropy[mask].mean()
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with th.no_grad():
                    approx_kl_div = ((ratio - 1) - log_ratio)[mask].mean().item()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                grad_norms.append(th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm))
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("elmur/read_entropy", np.mean(read_entropies))
        # before clipping: how far the losses pull (a stability diagnostic); one sync per update, not per minibatch
        self.logger.record("train/grad_norm", th.stack(grad_norms).mean().item() if grad_norms else float("nan"))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfPPOElmur,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOElmur",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOElmur:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
