"""Observation wrappers shared by every benchmark environment and every algorithm, the previous action and reward among them.

Two wrappers, applied in this order by :func:`wrap_env`:

* :class:`FlattenOneHotObservation` turns any vector-like observation space
  (``Discrete``, ``MultiDiscrete``, ``MultiBinary``, ``Box``, and ``Tuple``/``Dict``
  of those) into one flat ``float32`` ``Box``: discrete parts are one-hot encoded,
  ``Box`` parts are flattened as they are. SB3 refuses some of these spaces
  (e.g. ``Tuple``) and sb3-contrib's LSTM crashes on ``MultiDiscrete`` ones, so
  every algorithm gets the same float vector instead. Image ``Box`` spaces
  (``uint8``, 3 dims) are left alone so that CNN extractors still see images.
* :class:`PrevActionReward` appends the previous action (one-hot for discrete
  actions, the clipped raw value for ``Box`` actions) and the previous reward,
  zeros at the start of an episode, as the POPGym baselines feed their models.

Layout of a flat observation with the previous action and reward::

    [ encoded observation | encoded previous action | previous reward ]

:class:`PrevActionReward` is the one definition of these features. Natively vectorized envs that
build them in place for speed (the T-Maze) are held to it by a test that steps both side by side.
"""

from __future__ import annotations

from typing import Any, Callable, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PREV_KEY = "prev_action_reward"
IMAGE_KEY = "obs"

__all__ = [
    "FlatEncoder",
    "FlattenOneHotObservation",
    "PrevActionReward",
    "is_image_box",
    "wrap_env",
    "PREV_KEY",
    "IMAGE_KEY",
]


def is_image_box(space: spaces.Space) -> bool:
    """
    Whether ``space`` looks like an image that a CNN extractor should receive unchanged.

    :param space: a gymnasium space
    :return: True for a 3-dimensional ``uint8`` ``Box``
    """
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


class FlatEncoder:
    """
    Encodes one element of a (possibly nested) gymnasium space as a flat ``float32`` vector.

    ``Discrete`` and ``MultiDiscrete`` values become one-hot vectors (one block per
    component), ``Box`` and ``MultiBinary`` values are flattened and cast,
    ``Tuple`` and ``Dict`` concatenate their parts (``Dict`` in the space's key order).

    :param space: the space whose elements are encoded
    :param clip_box: clip ``Box`` values into the space's bounds and widen the
        bounds to include 0. Used for actions: SB3 clips continuous actions before
        ``env.step`` anyway, and the all-zero "no previous action" must lie in the space.
    """

    def __init__(self, space: spaces.Space, clip_box: bool = False) -> None:
        self.space = space
        self.clip_box = clip_box
        lows: list[np.ndarray] = []
        highs: list[np.ndarray] = []
        # Each part writes its slice of the output vector; building closures once keeps
        # the per-step cost to the encoding itself.
        self._parts: list[Callable[[Any, np.ndarray], None]] = []
        self.size = self._build(space, 0, lows, highs, lambda x: x)
        low = np.concatenate(lows).astype(np.float32) if lows else np.zeros(0, np.float32)
        high = np.concatenate(highs).astype(np.float32) if highs else np.zeros(0, np.float32)
        self.box = spaces.Box(low=low, high=high, dtype=np.float32)

    def _build(
        self,
        space: spaces.Space,
        offset: int,
        lows: list[np.ndarray],
        highs: list[np.ndarray],
        getter: Callable[[Any], Any],
    ) -> int:
        """Register the encoder of ``space`` at ``offset``; return the offset after it."""
        if isinstance(space, spaces.Discrete):
            n, start = int(space.n), int(space.start)
            lows.append(np.zeros(n))
            highs.append(np.ones(n))

            def enc_discrete(x: Any, out: np.ndarray, o: int = offset) -> None:
                out[o + int(getter(x)) - start] = 1.0

            self._parts.append(enc_discrete)
            return offset + n
        if isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
            start = np.asarray(space.start, dtype=np.int64).reshape(-1)
            block_starts = offset + np.concatenate([[0], np.cumsum(nvec)[:-1]]).astype(np.int64)
            total = int(nvec.sum())
            lows.append(np.zeros(total))
            highs.append(np.ones(total))

            def enc_multidiscrete(x: Any, out: np.ndarray) -> None:
                idx = np.asarray(getter(x), dtype=np.int64).reshape(-1) - start
                out[block_starts + idx] = 1.0

            self._parts.append(enc_multidiscrete)
            return offset + total
        if isinstance(space, spaces.MultiBinary):
            n = int(np.prod(space.shape))
            lows.append(np.zeros(n))
            highs.append(np.ones(n))

            def enc_binary(x: Any, out: np.ndarray, o: int = offset) -> None:
                out[o : o + n] = np.asarray(getter(x), dtype=np.float32).reshape(-1)

            self._parts.append(enc_binary)
            return offset + n
        if isinstance(space, spaces.Box):
            n = int(np.prod(space.shape))
            low = np.asarray(space.low, dtype=np.float64).reshape(-1)
            high = np.asarray(space.high, dtype=np.float64).reshape(-1)
            if self.clip_box:
                clip_low, clip_high = low.astype(np.float32), high.astype(np.float32)
                low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)

                def enc_box(x: Any, out: np.ndarray, o: int = offset) -> None:
                    v = np.asarray(getter(x), dtype=np.float32).reshape(-1)
                    out[o : o + n] = np.clip(v, clip_low, clip_high)

            else:

                def enc_box(x: Any, out: np.ndarray, o: int = offset) -> None:
                    out[o : o + n] = np.asarray(getter(x), dtype=np.float32).reshape(-1)

            lows.append(low)
            highs.append(high)
            self._parts.append(enc_box)
            return offset + n
        if isinstance(space, spaces.Tuple):
            for i, sub in enumerate(space.spaces):
                offset = self._build(sub, offset, lows, highs, lambda x, i=i, g=getter: g(x)[i])
            return offset
        if isinstance(space, spaces.Dict):
            for key, sub in space.spaces.items():
                offset = self._build(sub, offset, lows, highs, lambda x, k=key, g=getter: g(x)[k])
            return offset
        raise NotImplementedError(f"Cannot encode observation/action space {space} as a flat vector")

    def encode(self, x: Any) -> np.ndarray:
        """
        :param x: an element of ``self.space``
        :return: its flat ``float32`` encoding (a new array)
        """
        out = np.zeros(self.size, dtype=np.float32)
        for part in self._parts:
            part(x, out)
        return out


class FlattenOneHotObservation(gym.ObservationWrapper):
    """
    Hands out every observation as a flat ``float32`` ``Box`` (one-hot for discrete parts).

    Image ``Box`` spaces pass unchanged; a ``Dict`` holding images keeps its image
    entries and has each other entry flattened to its own ``float32`` ``Box``
    (for SB3's ``MultiInputPolicy``).

    :param env: the environment to wrap
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self._encoders: dict[str, FlatEncoder] | None = None
        self._encoder: FlatEncoder | None = None
        if is_image_box(space):
            pass
        elif isinstance(space, spaces.Dict) and any(is_image_box(s) for s in space.spaces.values()):
            self._encoders = {k: FlatEncoder(s) for k, s in space.spaces.items() if not is_image_box(s)}
            self.observation_space = spaces.Dict(
                {k: (self._encoders[k].box if k in self._encoders else s) for k, s in space.spaces.items()}
            )
        else:
            self._encoder = FlatEncoder(space)
            self.observation_space = self._encoder.box

    def observation(self, observation: Any) -> Any:
        if self._encoder is not None:
            return self._encoder.encode(observation)
        if self._encoders is not None:
            return {
                k: (self._encoders[k].encode(v) if k in self._encoders else v) for k, v in observation.items()
            }
        return observation


class PrevActionReward(gym.Wrapper):
    """
    Appends the previous action and the previous reward to the observation.

    The action is one-hot encoded for ``Discrete``/``MultiDiscrete`` spaces and
    clipped into its bounds for ``Box`` spaces; both features are zero after
    ``reset``. A flat ``Box`` observation becomes
    ``[obs, prev_action, prev_reward]``; an image ``Box`` becomes
    ``Dict(obs=image, prev_action_reward=vector)``; a ``Dict`` gains the key
    ``prev_action_reward``.

    :param env: the environment to wrap (its observations already flat ``float32``
        or images, e.g. after :class:`FlattenOneHotObservation`)
    :param use_reward: also append the previous reward
    """

    def __init__(self, env: gym.Env, use_reward: bool = True) -> None:
        super().__init__(env)
        self.use_reward = use_reward
        self._action_encoder = FlatEncoder(env.action_space, clip_box=True)
        act_box = self._action_encoder.box
        low, high = act_box.low, act_box.high
        if use_reward:
            low = np.append(low, -np.inf).astype(np.float32)
            high = np.append(high, np.inf).astype(np.float32)
        self.prev_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.prev_size = int(self.prev_space.shape[0])

        space = env.observation_space
        self._mode: str
        if isinstance(space, spaces.Box) and len(space.shape) == 1 and not is_image_box(space):
            self._mode = "concat"
            self.observation_space = spaces.Box(
                low=np.concatenate([space.low.astype(np.float32), self.prev_space.low]),
                high=np.concatenate([space.high.astype(np.float32), self.prev_space.high]),
                dtype=np.float32,
            )
        elif isinstance(space, spaces.Box):
            self._mode = "image"
            self.observation_space = spaces.Dict({IMAGE_KEY: space, PREV_KEY: self.prev_space})
        elif isinstance(space, spaces.Dict):
            self._mode = "dict"
            if PREV_KEY in space.spaces:
                raise ValueError(f"Observation space already has a '{PREV_KEY}' entry")
            self.observation_space = spaces.Dict({**space.spaces, PREV_KEY: self.prev_space})
        else:
            raise NotImplementedError(
                f"PrevActionReward needs a Box or Dict observation space, got {space}; "
                "apply FlattenOneHotObservation first"
            )

    def _prev_features(self, action: Any, reward: SupportsFloat) -> np.ndarray:
        act = self._action_encoder.encode(action)
        if self.use_reward:
            return np.append(act, np.float32(reward)).astype(np.float32, copy=False)
        return act

    def _attach(self, obs: Any, prev: np.ndarray) -> Any:
        if self._mode == "concat":
            return np.concatenate([np.asarray(obs, dtype=np.float32), prev])
        if self._mode == "image":
            return {IMAGE_KEY: obs, PREV_KEY: prev}
        return {**obs, PREV_KEY: prev}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._attach(obs, self._prev_features(action, reward)), reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._attach(obs, np.zeros(self.prev_size, dtype=np.float32)), info


def wrap_env(env: gym.Env, prev_action: bool = True) -> gym.Env:
    """
    Apply the benchmark's observation wrappers (the same for every algorithm).

    :param env: a gymnasium environment
    :param prev_action: append the previous action and reward (see :class:`PrevActionReward`)
    :return: the wrapped environment
    """
    env = FlattenOneHotObservation(env)
    if prev_action:
        env = PrevActionReward(env)
    return env
