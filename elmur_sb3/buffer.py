"""Rollout buffer for PPO-ELMUR: SB3's fields plus episode times, segment starts (memories and
attention caches) and the carried-over prefix of a segment that began in the previous rollout;
it yields training chains of consecutive segments of one episode."""

from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.type_aliases import PyTorchObs

from elmur_sb3.core import SegmentStart
from elmur_sb3.memory import Memory

Observations = np.ndarray | dict[str, np.ndarray]


def map_obs(fn: Callable[..., np.ndarray], *observations: Observations) -> Observations:
    """Apply ``fn`` to an observation array, or key by key to dict observations."""
    if isinstance(observations[0], dict):
        return {key: fn(*(obs[key] for obs in observations)) for key in observations[0]}
    return fn(*observations)


def concat_segment_starts(starts: list[SegmentStart]) -> SegmentStart:
    """Stack the segment starts of several batches into one batch."""
    memory = Memory(th.cat([s.memory.vectors for s in starts], dim=1), th.cat([s.memory.times for s in starts]))
    return SegmentStart(memory, th.cat([s.cache for s in starts], dim=1))


def split_into_chains(episode_times: np.ndarray, segment_len: int, max_segments: int) -> list[list[tuple[int, int]]]:
    """Group the consecutive steps of one env into segments and the segments into chains.

    A segment starts wherever the episode time is a multiple of ``segment_len`` (episode starts
    included); a chain holds up to ``max_segments`` consecutive segments of one episode.

    :param episode_times: episode time of each step, in order; the first is a segment start
    :return: chains as lists of ``(begin, end)`` index ranges
    """
    begins = np.flatnonzero(episode_times % segment_len == 0)
    ends = np.append(begins[1:], len(episode_times))
    chains: list[list[tuple[int, int]]] = []
    for begin, end in zip(begins.tolist(), ends.tolist()):
        if not chains or episode_times[begin] == 0 or len(chains[-1]) == max_segments:
            chains.append([])
        chains[-1].append((begin, end))
    return chains


class ElmurRolloutBufferSamples(NamedTuple):
    """One minibatch of chains. Per-step fields are flat in chain-major ``(C, K, L)`` order.

    :param loss_mask: True on steps of this rollout; False on the carried-over prefix and padding
    :param start_times: ``(C, K)`` episode time of each segment's first step
    :param start_pi: the actor core's memory and attention cache at each chain's start
    :param start_vf: the critic core's (None when shared)
    """

    observations: PyTorchObs
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    loss_mask: th.Tensor
    start_times: th.Tensor
    start_pi: SegmentStart
    start_vf: SegmentStart | None


class ElmurRolloutBuffer(RolloutBuffer):
    """Rollout buffer for ELMUR policies; Box, discrete and Dict observations alike.

    :param buffer_size: steps per env in a rollout (``n_steps``)
    :param observation_space: observation space
    :param action_space: action space
    :param segment_len: the policy's segment length ``L``
    :param bptt_segments: segments per training chain ``K``
    :param device: where minibatches go
    :param gae_lambda: GAE lambda
    :param gamma: discount factor
    :param n_envs: number of envs
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        segment_len: int,
        bptt_segments: int,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ):
        self.segment_len = segment_len
        self.bptt_segments = bptt_segments
        self.prefix_obs: Observations | None = None  # (n_envs, L - 1, ...) the current segments' earlier steps
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)
        self.prefix_obs = self._zeros_obs((self.n_envs, max(segment_len - 1, 0)))
        self.next_prefix_obs = self.prefix_obs

    def _zeros_obs(self, leading: tuple[int, ...]) -> Observations:
        if isinstance(self.observation_space, spaces.Dict):
            return {
                key: np.zeros((*leading, *shape), dtype=self.observation_space[key].dtype)
                for key, shape in get_obs_shape(self.observation_space).items()
            }
        return np.zeros((*leading, *self.obs_shape), dtype=self.observation_space.dtype)

    def reset(self) -> None:
        # RolloutBuffer.reset cannot shape Dict observations: build every field here.
        shape = (self.buffer_size, self.n_envs)
        self.actions = np.zeros((*shape, self.action_dim), dtype=self.action_space.dtype)
        for name in ("rewards", "returns", "episode_starts", "values", "log_probs", "advantages"):
            setattr(self, name, np.zeros(shape, dtype=np.float32))
        self.generator_ready = False
        self.pos, self.full = 0, False
        if self.prefix_obs is not None:  # the parent's constructor resets before the prefix exists
            self.prefix_obs = self.next_prefix_obs
        self.observations = self._zeros_obs((self.buffer_size, self.n_envs))
        self.episode_times = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self.segment_records: list[tuple[int, np.ndarray, SegmentStart, SegmentStart | None]] = []
        self.chains: dict[str, Any] | None = None

    def add(  # type: ignore[override]
        self,
        obs: Observations,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
        episode_time: np.ndarray,
    ) -> None:
        """SB3's fields plus ``episode_time``, the episode time of ``obs`` in each env."""

        def store(storage: np.ndarray, new: np.ndarray) -> np.ndarray:
            storage[self.pos] = np.asarray(new).reshape(storage.shape[1:])
            return storage

        map_obs(store, self.observations, obs)
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = value.clone().cpu().numpy().flatten()
        self.log_probs[self.pos] = log_prob.clone().cpu().numpy().reshape(self.n_envs)
        self.episode_times[self.pos] = episode_time
        self.pos += 1
        self.full = self.pos == self.buffer_size

    def add_segment_start(self, envs: np.ndarray, start_pi: SegmentStart, start_vf: SegmentStart | None) -> None:
        """Record the memory and cache of ``envs`` at the start of the segment that the next ``add`` step belongs to.

        Call it before ``add`` for every env at the first step of the rollout (covering
        segments that began in the previous rollout) and afterwards for every env whose step
        starts a segment; the records are the rows ``envs`` of the given ones.
        """
        rows = th.as_tensor(envs, device=start_pi.memory.times.device)
        vf = None if start_vf is None else start_vf.index(rows)
        self.segment_records.append((self.pos, np.asarray(envs), start_pi.index(rows), vf))

    def carry_over(self, next_episode_time: np.ndarray, next_episode_start: np.ndarray) -> None:
        """Keep the observations of each env's unfinished segment for the next rollout's update.

        :param next_episode_time: episode time of the next rollout's first observation per env
        :param next_episode_start: whether that observation starts an episode
        """
        L = self.segment_len
        n_prefix = np.where(next_episode_start, 0, next_episode_time % L)

        def carry(prefix: np.ndarray, rollout: np.ndarray) -> np.ndarray:
            history = np.concatenate([prefix, rollout.swapaxes(0, 1)], axis=1)  # (n_envs, L - 1 + n_steps, ...)
            new_prefix = np.zeros_like(prefix)
            for env, count in enumerate(n_prefix):
                if count:
                    new_prefix[env, :count] = history[env, history.shape[1] - count :]
            return new_prefix

        # The update of this rollout still needs the current prefix; the next reset takes this one.
        self.next_prefix_obs = map_obs(carry, self.prefix_obs, self.observations)

    # ----------------------------------------------------------------------------------------

    def _build_chains(self) -> None:
        """Cut each env's steps (prefix included) into segments and the segments into chains.

        Token sources are indices into ``[rollout steps (step-major), prefix steps (env-major), pad]``.
        """
        L, K, n_steps, n_envs = self.segment_len, self.bptt_segments, self.buffer_size, self.n_envs
        n_rollout = n_steps * n_envs
        pad_index = n_rollout + n_envs * max(L - 1, 0)
        memory_row = np.full((n_steps, n_envs), -1, dtype=np.int64)
        row = 0
        for step, envs, _, _ in self.segment_records:
            memory_row[step, envs] = np.arange(row, row + len(envs))
            row += len(envs)

        tokens, start_times, memory_rows = [], [], []
        for env in range(n_envs):
            times = self.episode_times[:, env]
            n_prefix = int(times[0] % L)
            sources = np.concatenate([n_rollout + env * (L - 1) + np.arange(n_prefix), np.arange(n_steps) * n_envs + env])
            ext_times = np.concatenate([times[0] - n_prefix + np.arange(n_prefix), times])
            for chain in split_into_chains(ext_times, L, K):
                chain_tokens = np.full((K, L), pad_index, dtype=np.int64)
                for k, (begin, end) in enumerate(chain):
                    chain_tokens[k, : end - begin] = sources[begin:end]
                tokens.append(chain_tokens)
                start_times.append(np.pad(ext_times[[begin for begin, _ in chain]], (0, K - len(chain))))
                # a chain that begins in the prefix takes the memory recorded at rollout step 0
                first_step = max(chain[0][0] - n_prefix, 0)
                if memory_row[first_step, env] < 0:
                    raise RuntimeError(
                        f"no segment start was recorded for env {env} at rollout step {first_step}; "
                        "call add_segment_start for every segment start"
                    )
                memory_rows.append(memory_row[first_step, env])

        tokens_array = np.stack(tokens)
        self.chains = {
            "tokens": tokens_array,  # (C, K, L) source indices
            "start_times": np.stack(start_times),  # (C, K)
            "memory_rows": np.asarray(memory_rows),  # (C,) rows into the concatenated segment records
            "loss_mask": tokens_array < n_rollout,
        }
        self.record_start_pi = concat_segment_starts([record[2] for record in self.segment_records])
        has_critic = self.segment_records[0][3] is not None
        self.record_start_vf = concat_segment_starts([r[3] for r in self.segment_records]) if has_critic else None

    def _flat_with_prefix(self, array: np.ndarray, prefix: np.ndarray | None = None) -> np.ndarray:
        """``[rollout (step-major), prefix (env-major), one zero row]`` along the first axis.

        Fields the prefix does not have (actions, returns, ...) get zeros there: those steps carry no loss.
        """
        step_shape = array.shape[2:]
        n_prefix = self.n_envs * max(self.segment_len - 1, 0)
        prefix = np.zeros((n_prefix, *step_shape), array.dtype) if prefix is None else prefix.reshape(-1, *step_shape)
        return np.concatenate([array.reshape(-1, *step_shape), prefix, np.zeros((1, *step_shape), dtype=array.dtype)])

    def get(self, batch_size: int | None = None) -> Generator[ElmurRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Minibatches of whole chains, shuffled, each holding about ``batch_size`` steps of this rollout."""
        assert self.full, "the rollout buffer is not full"
        if self.chains is None:
            self._build_chains()
            self._flat = {
                "observations": map_obs(self._flat_with_prefix, self.observations, self.prefix_obs),
                **{
                    name: self._flat_with_prefix(getattr(self, name))
                    for name in ("actions", "values", "log_probs", "advantages", "returns")
                },
            }
        n_chains = len(self.chains["tokens"])
        n_loss_steps = int(self.chains["loss_mask"].sum())
        n_batches = max(1, round(n_loss_steps / (batch_size or n_loss_steps)))
        for chain_ids in np.array_split(np.random.permutation(n_chains), n_batches):
            yield self._get_samples(chain_ids)

    def _start_rows(self, start: SegmentStart, rows: th.Tensor) -> SegmentStart:
        start = start.index(rows)
        return SegmentStart(Memory(*(x.to(self.device) for x in start.memory)), start.cache.to(self.device))

    def _get_samples(self, chain_ids: np.ndarray, env: Any = None) -> ElmurRolloutBufferSamples:  # type: ignore[override]
        tokens = self.chains["tokens"][chain_ids].reshape(-1)
        flat = self._flat
        observations = map_obs(lambda a: self.to_torch(a[tokens]), flat["observations"])
        if isinstance(observations, th.Tensor) and observations.dtype == th.float64:
            observations = observations.float()
        rows = th.as_tensor(self.chains["memory_rows"][chain_ids], device=self.record_start_pi.memory.times.device)
        return ElmurRolloutBufferSamples(
            observations=observations,
            actions=self.to_torch(flat["actions"][tokens].astype(np.float32)),
            old_values=self.to_torch(flat["values"][tokens]),
            old_log_prob=self.to_torch(flat["log_probs"][tokens]),
            advantages=self.to_torch(flat["advantages"][tokens]),
            returns=self.to_torch(flat["returns"][tokens]),
            loss_mask=self.to_torch(self.chains["loss_mask"][chain_ids].reshape(-1)).bool(),
            start_times=th.as_tensor(self.chains["start_times"][chain_ids], device=self.device),
            start_pi=self._start_rows(self.record_start_pi, rows),
            start_vf=None if self.record_start_vf is None else self._start_rows(self.record_start_vf, rows),
        )
