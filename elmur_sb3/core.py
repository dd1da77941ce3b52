"""ELMUR: a transformer whose every layer owns a small external memory (arXiv 2510.07151).

One token per environment step. An episode is cut into segments of ``segment_len`` steps,
counted from the episode start. Inside a segment a layer does

    token track   h = Norm(h + SelfAttn_causal(h))          relative positions in the segment
                  h = Norm(h + CrossAttn(h -> m, B(t - p)))  read: tokens attend to the memory
                  h = Norm(h + FFN(h))
    memory track  u = Norm(m + CrossAttn(m -> h, B(p - t)))  write: the memory attends to the tokens
                  u = Norm(u + FFN_mem(u))

and once the segment's last step is processed the LRU rule (``memory.write_memory``) puts
``u`` into one slot. With ``cache_len = C > 0`` (this project's extension, as in Transformer-XL
and the authors' RATE) the self-attention also sees the last ``C`` tokens before the segment start
(same episode only): the cache carries the short range across segment starts, the memory the
long range; ``C = 0`` is the paper's model. ``t`` are the tokens' episode times, ``p`` the slots'
timestamps, ``B`` a learned per-head bias over the clamped distance (beyond ``max_dist`` all reads as
"long ago": what lets a model trained on short episodes act on far longer ones). Reads inside a
segment see the memory as it was at the segment start.

Two execution paths compute the same function:

- ``ElmurCore.step``: one token per batch row, self-attention keys/values cached for the
  current segment and its cache; cost per step O(segment_len + cache_len + memory_slots),
  whatever the episode time.
- ``ElmurCore.forward_segment``: a whole segment per batch row at once, with a causal mask.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch as th
from torch import nn

from elmur_sb3.memory import Memory, initial_memory, lru_slot_mask, write_memory


@dataclass
class ElmurConfig:
    """Architecture of an ELMUR core: the single list of its options.

    :param d_model: token and memory width
    :param n_layers: number of layers, each with its own memory
    :param n_heads: attention heads (must divide ``d_model``)
    :param d_ff: hidden width of the feed-forward blocks (default ``4 * d_model``)
    :param segment_len: steps per segment (the attention window ``L``)
    :param cache_len: tokens before the segment start that self-attention also sees (same episode
        only; default ``segment_len``, so every token sees at least the last ``segment_len`` steps);
        0 is the paper's model, where attention stops at the segment start
    :param memory_slots: slots per layer memory (``M``)
    :param lru_blend: weight of the new content when an occupied slot is updated, in (0, 1]
    :param use_lru: False replaces the whole memory every segment (the paper's ablation)
    :param write_gate: a learned gate ``g = sigmoid(w . u + b)`` per layer and slot scales each LRU
        update, ``slot <- g * lru_blend * u + (1 - g * lru_blend) * slot``, so that a segment with
        nothing worth keeping can leave an old slot (a T-Maze cue) as it was; ``w = 0, b = 3`` at the
        start (``g = 0.95``, near the paper's rule). Needs ``use_lru``
    :param memory_init_std: std of the initial slot contents (0 = deterministic zeros)
    :param max_dist: distances are clamped to ``[-max_dist, max_dist]`` in the memory bias
    :param position_embedding: add a learned embedding of the token's position in its segment (the
        paper's code offers it too); without it only the relative self-attention bias places a token
    :param alibi_init: start each head's self-attention bias as ALiBi's recency penalty
        ``-slope_h * distance`` (slopes ``2^(-8h/H)``, Press et al. 2022), learned from there; False
        starts at zero, uniform over the window: "the step k back" needs a large learned bias first
    :param norm_first: pre-norm residual blocks, ``h = h + f(Norm(h))``, with a final norm on the
        core's output (GTrXL's reordering, which it found to stabilise transformers in RL); False is
        the paper's post-norm ``h = Norm(h + f(h))``
    :param residual_gate: GTrXL's GRU-type gate in place of the token track's three residual sums,
        ``h = GRU(h, ReLU(f(Norm(h))))``, its update gate biased to start near the identity (``b_g = 2``);
        Parisotto et al. 2019 found pre-norm plus this gate what makes transformers stable in RL. Needs
        ``norm_first``; the memory track keeps its residual sums (its slots are normed at the end)
    :param output_scale: factor on the output tokens that the policy and value heads read (the memory
        write reads them unscaled); None gives ``1 / sqrt(d_model)``, an output of norm ~1 like an LSTM's,
        where layer-normed tokens have norm ~``sqrt(d_model)``: the heads' input scale sets how far one
        update moves the policy, and gSDE's noise scales with it (None measured worse on 3 of 5 tasks:
        docs/results, "The heads' input scale")
    :param dropout: dropout inside the layers; keep 0 for PPO (its ratio needs the rollout's function)
    """

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    segment_len: int = 16
    cache_len: int | None = None
    memory_slots: int = 8
    lru_blend: float = 0.8
    use_lru: bool = True
    write_gate: bool = False
    memory_init_std: float = 0.0
    max_dist: int = 1024
    position_embedding: bool = False
    alibi_init: bool = True
    norm_first: bool = False
    residual_gate: bool = False
    output_scale: float | None = 1.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in ("d_model", "n_layers", "n_heads", "segment_len", "memory_slots", "max_dist"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        if self.cache_len is None:
            self.cache_len = self.segment_len
        need(
            isinstance(self.cache_len, int) and self.cache_len >= 0,
            f"cache_len must be an integer >= 0 (0 = no attention cache), got {self.cache_len!r}",
        )
        need(
            self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
            f"try n_heads in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:8]}",
        )
        need(0.0 < self.lru_blend <= 1.0, f"lru_blend must lie in (0, 1], got {self.lru_blend!r}")
        need(self.use_lru or not self.write_gate, "write_gate gates the LRU update: it needs use_lru=True")
        need(
            self.norm_first or not self.residual_gate,
            "residual_gate gates pre-norm residual blocks (GTrXL): it needs norm_first=True",
        )
        need(self.memory_init_std >= 0.0, f"memory_init_std must be >= 0, got {self.memory_init_std!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.output_scale is None:
            self.output_scale = 1.0 / math.sqrt(self.d_model)
        need(
            isinstance(self.output_scale, (int, float)) and self.output_scale > 0.0,
            f"output_scale must be > 0 (None = 1/sqrt(d_model)), got {self.output_scale!r}",
        )
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        need(isinstance(self.d_ff, int) and self.d_ff >= 1, f"d_ff must be an integer >= 1, got {self.d_ff!r}")


class SegmentStart(NamedTuple):
    """What a segment needs from before its start, for a batch of episodes.

    :param memory: every layer's memory at the segment start
    :param cache: every layer's input tokens of the ``cache_len`` steps before the segment start,
        ``(n_layers, B, cache_len, d_model)``, oldest first; those before the episode start are
        stale and masked by their episode time
    """

    memory: Memory
    cache: th.Tensor

    def index(self, rows: th.Tensor | slice) -> "SegmentStart":
        """The segment start of some batch rows."""
        return SegmentStart(self.memory.index(rows), self.cache[:, rows])


@dataclass
class ElmurCoreState:
    """Recurrent state of a core for a batch of episodes (the step path's caches).

    :param start: memory and attention cache at the current segment's start
    :param keys: self-attention keys of ``start.cache`` followed by those of the current segment's
        tokens, ``(n_layers, B, H, cache_len + L, d_head)``: one buffer, so a step attends without
        concatenating and writes its own key in place
    :param values: self-attention values, same shape
    :param inputs: each layer's input tokens of the current segment, ``(n_layers, B, L, d_model)``
        (the next segment's cache is made of them)
    :param outputs: each layer's output tokens of the current segment, ``(n_layers, B, L, d_model)``
        (the memory write at the segment's end reads them)
    :param memory_keys: the memory read's keys of ``start.memory``, ``(n_layers, B, H, M, d_head)``: the
        memory changes only at segment starts and episode starts, so it is projected then, not every step
    :param memory_values: their values, same shape
    :param episode_time: episode time of the next token, ``(B,)``; its position in the segment
        is ``episode_time % segment_len``
    """

    start: SegmentStart
    keys: th.Tensor
    values: th.Tensor
    inputs: th.Tensor
    outputs: th.Tensor
    memory_keys: th.Tensor
    memory_values: th.Tensor
    episode_time: th.Tensor

    @property
    def memory(self) -> Memory:
        return self.start.memory

    def index(self, rows: th.Tensor | slice) -> "ElmurCoreState":
        """The state of some batch rows."""
        return ElmurCoreState(
            self.start.index(rows),
            *(x[:, rows] for x in (self.keys, self.values, self.inputs, self.outputs, self.memory_keys, self.memory_values)),
            self.episode_time[rows],
        )


def attend(query: th.Tensor, key: th.Tensor, value: th.Tensor, bias: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Scaled dot-product attention with an additive bias (``-inf`` masks).

    :return: attended values ``(..., H, Tq, d_head)`` and the attention weights ``(..., H, Tq, Tk)``
    """
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1]) + bias
    if scores.device.type == "cpu" and scores.shape[-1] < 16:
        # torch's CPU softmax over rows shorter than a vector register (a memory of 8 slots) is ~10x
        # slower than the same softmax taken down the columns of the transposed view (benchmarks/bench_core.py)
        weights = scores.transpose(-1, -2).softmax(dim=-2).transpose(-1, -2)
    else:
        weights = scores.softmax(dim=-1)
    return weights @ value, weights


class MultiHeadAttention(nn.Module):
    """Projections of a multi-head attention; the attention itself is ``attend``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: th.Tensor) -> th.Tensor:
        """``(..., T, d)`` -> ``(..., H, T, d / H)``"""
        return x.unflatten(-1, (self.n_heads, -1)).transpose(-3, -2)

    def queries(self, x: th.Tensor) -> th.Tensor:
        return self.split_heads(self.query(x))

    def keys_values(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        key, value = self.key_value(x).chunk(2, dim=-1)
        return self.split_heads(key), self.split_heads(value)

    def merge(self, attended: th.Tensor) -> th.Tensor:
        """``(..., H, T, d / H)`` -> output projection of ``(..., T, d)``"""
        return self.dropout(self.out(attended.transpose(-3, -2).flatten(-2)))

    def forward(self, x: th.Tensor, context: th.Tensor, bias: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``x`` attends to ``context``; returns the output and the attention weights."""
        attended, weights = attend(self.queries(x), *self.keys_values(context), bias)
        return self.merge(attended), weights


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))


class GRUGate(nn.Module):
    """GTrXL's gating layer: a GRU step from the residual stream ``x`` with the block's output ``y`` as input.

    ``r = s(W_r y + U_r x)``, ``z = s(W_z y + U_z x - b_g)``, ``c = tanh(W_g y + U_g (r * x))``,
    ``out = (1 - z) * x + z * c``; with ``b_g = 2`` every ``z`` starts near 0.12, near the identity map.
    """

    def __init__(self, d_model: int, gate_bias: float = 2.0):
        super().__init__()
        self.from_input = nn.Linear(d_model, 3 * d_model, bias=False)
        self.from_state = nn.Linear(d_model, 2 * d_model, bias=False)
        self.candidate_from_state = nn.Linear(d_model, d_model, bias=False)
        self.gate_bias = nn.Parameter(th.full((d_model,), gate_bias))

    def forward(self, x: th.Tensor, y: th.Tensor) -> th.Tensor:
        y_reset, y_update, y_candidate = self.from_input(y).chunk(3, dim=-1)
        x_reset, x_update = self.from_state(x).chunk(2, dim=-1)
        reset = th.sigmoid(y_reset + x_reset)
        update = th.sigmoid(y_update + x_update - self.gate_bias)
        candidate = th.tanh(y_candidate + self.candidate_from_state(reset * x))
        return x + update * (candidate - x)


class DistanceBias(nn.Module):
    """Learned per-head bias over a clamped time distance (the paper's ``B_l``)."""

    def __init__(self, n_heads: int, max_dist: int):
        super().__init__()
        self.max_dist = max_dist
        self.table = nn.Embedding(2 * max_dist + 1, n_heads)
        nn.init.zeros_(self.table.weight)

    def forward(self, distance: th.Tensor) -> th.Tensor:
        """``distance (B, Tq, Tk)`` -> bias ``(B, H, Tq, Tk)``"""
        index = distance.clamp(-self.max_dist, self.max_dist) + self.max_dist
        return self.table(index).movedim(-1, -3)


class ElmurLayer(nn.Module):
    """One ELMUR layer: the token track and the memory track of the module docstring."""

    def __init__(self, config: ElmurConfig):
        super().__init__()
        d, h, p = config.d_model, config.n_heads, config.dropout
        self.segment_len, self.cache_len, self.norm_first = config.segment_len, config.cache_len, config.norm_first
        self.self_attn = MultiHeadAttention(d, h, p)
        # Learned bias per head over the distance i - j between a token and an earlier one, which
        # lies in its segment or in the cache before it.
        distance = th.arange(config.segment_len + config.cache_len, dtype=th.float32)
        slopes = 2.0 ** (-8.0 * th.arange(1, h + 1) / h) if config.alibi_init else th.zeros(h)
        self.self_bias = nn.Parameter(-slopes[:, None] * distance)
        self.read = MultiHeadAttention(d, h, p)
        self.write = MultiHeadAttention(d, h, p)
        self.memory_bias = DistanceBias(h, config.max_dist)
        self.ffn = FeedForward(d, config.d_ff, p)
        self.memory_ffn = FeedForward(d, config.d_ff, p)
        self.norm_self, self.norm_read, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_write, self.norm_memory_ffn = nn.LayerNorm(d), nn.LayerNorm(d)
        # Pre-norm blocks leave the memory track's residual un-normed, and every segment's write adds to
        # it: without a closing norm the slots grow geometrically over an episode (measured: 5e8 after
        # 500 steps on CartPoleNoVel, then NaN). Post-norm slots are normed already.
        self.norm_memory_out = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        gate = (lambda: GRUGate(d)) if config.residual_gate else (lambda: None)  # noqa: E731
        self.gate_self, self.gate_read, self.gate_ffn = gate(), gate(), gate()
        self.write_gate = nn.Linear(d, 1) if config.write_gate else None
        if self.write_gate is not None:
            nn.init.zeros_(self.write_gate.weight)
            nn.init.constant_(self.write_gate.bias, 3.0)

    def self_attention_bias(self, query_pos: th.Tensor, key_pos: th.Tensor, key_valid: th.Tensor) -> th.Tensor:
        """Causal relative bias over segment positions (the cache at ``-cache_len .. -1``).

        :param query_pos: ``(..., Tq)``
        :param key_pos: ``(..., Tk)``
        :param key_valid: ``(B, Tk)``, False for cached tokens from before the episode start
        :return: ``(B, H, Tq, Tk)``
        """
        distance = query_pos[..., :, None] - key_pos[..., None, :]
        bias = self.self_bias[:, distance.clamp(min=0)].movedim(0, -3)
        return bias.masked_fill((distance < 0).unsqueeze(-3), float("-inf")).masked_fill(
            ~key_valid[:, None, None, :], float("-inf")
        )

    def pre(self, norm: nn.LayerNorm, x: th.Tensor) -> th.Tensor:
        """A block's input: normed in pre-norm blocks, as is in post-norm ones."""
        return norm(x) if self.norm_first else x

    def post(self, norm: nn.LayerNorm, x: th.Tensor, update: th.Tensor, gate: GRUGate | None = None) -> th.Tensor:
        """The residual connection around a block, normed after it in post-norm blocks, or ``gate``d (GTrXL)."""
        if gate is not None:
            return gate(x, th.relu(update))
        return x + update if self.norm_first else norm(x + update)

    def self_keys_values(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Self-attention keys and values of layer inputs ``x`` (segment tokens or cached ones)."""
        return self.self_attn.keys_values(self.pre(self.norm_self, x))

    def cache_valid(self, segment_start_time: th.Tensor) -> th.Tensor:
        """``(B,)`` -> ``(B, cache_len)``: which cached tokens belong to the current episode."""
        offsets = th.arange(-self.cache_len, 0, device=segment_start_time.device)
        return segment_start_time[:, None] + offsets >= 0

    def read_memory_and_ffn(
        self, h: th.Tensor, memory_keys: th.Tensor, memory_values: th.Tensor, memory_times: th.Tensor, token_times: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Second and third steps of the token track; returns tokens and read-attention weights.

        :param memory_keys: the read's keys of the layer's memory (``self.read.keys_values(memory)``)
        :param memory_values: and its values
        """
        bias = self.memory_bias(token_times[:, :, None] - memory_times[:, None, :])
        attended, weights = attend(self.read.queries(self.pre(self.norm_read, h)), memory_keys, memory_values, bias)
        h = self.post(self.norm_read, h, self.read.merge(attended), self.gate_read)
        return self.post(self.norm_ffn, h, self.ffn(self.pre(self.norm_ffn, h)), self.gate_ffn), weights

    def memory_candidates(
        self, memory: th.Tensor, memory_times: th.Tensor, tokens: th.Tensor, token_times: th.Tensor
    ) -> th.Tensor:
        """The memory track: what this segment would write into each slot, ``(B, M, d)``."""
        bias = self.memory_bias(memory_times[:, :, None] - token_times[:, None, :])
        written, _ = self.write(self.pre(self.norm_write, memory), tokens, bias)
        u = self.post(self.norm_write, memory, written)
        return self.norm_memory_out(self.post(self.norm_memory_ffn, u, self.memory_ffn(self.pre(self.norm_memory_ffn, u))))

    def write_strength(self, candidates: th.Tensor) -> th.Tensor:
        """The write gate of each slot's update, ``(B, M, 1)``; only built with ``write_gate``."""
        return th.sigmoid(self.write_gate(candidates))

    def forward_segment(
        self, h: th.Tensor, cache: th.Tensor, memory: th.Tensor, memory_times: th.Tensor, token_times: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Token track over whole segments ``h (B, T, d)`` starting at position 0.

        :param cache: the layer's input tokens of the ``cache_len`` steps before the segments, ``(B, C, d)``
        """
        positions = th.arange(h.shape[1], device=h.device)
        key_positions = th.arange(-self.cache_len, h.shape[1], device=h.device)
        key_valid = th.cat([self.cache_valid(token_times[:, 0]), th.ones_like(token_times, dtype=th.bool)], dim=1)
        keys, values = self.self_keys_values(th.cat([cache, h], dim=1))
        bias = self.self_attention_bias(positions, key_positions, key_valid)
        attended, _ = attend(self.self_attn.queries(self.pre(self.norm_self, h)), keys, values, bias)
        h = self.post(self.norm_self, h, self.self_attn.merge(attended), self.gate_self)
        return self.read_memory_and_ffn(h, *self.read.keys_values(memory), memory_times, token_times)

    def forward_step(
        self,
        x: th.Tensor,
        memory_keys: th.Tensor,
        memory_values: th.Tensor,
        memory_times: th.Tensor,
        token_time: th.Tensor,
        keys: th.Tensor,
        values: th.Tensor,
        position: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor]:
        """Token track for one token per row ``x (B, d)`` at segment position ``position (B,)``.

        :param memory_keys: the read's keys and values of the layer's memory (``self.read.keys_values``)
        :param memory_values: and its values
        :param keys: self-attention keys of the cache and the segment, ``(B, H, cache_len + L, d_head)``;
            the token's own key is written into it in place, at its position (pass a copy you own)
        :param values: the values, alike
        :return: output token ``(B, d)`` and the read-attention weights
        """
        rows = th.arange(len(x), device=x.device)
        new_key, new_value = (kv[:, :, 0] for kv in self.self_keys_values(x[:, None]))  # (B, H, d_head)
        keys[rows, :, self.cache_len + position] = new_key
        values[rows, :, self.cache_len + position] = new_value
        key_positions = th.arange(-self.cache_len, self.segment_len, device=x.device)
        in_segment = th.ones((len(x), self.segment_len), dtype=th.bool, device=x.device)
        key_valid = th.cat([self.cache_valid(token_time - position), in_segment], dim=1)
        bias = self.self_attention_bias(position[:, None], key_positions.expand(len(position), -1), key_valid)
        query = self.self_attn.queries(self.pre(self.norm_self, x[:, None]))
        attended, _ = attend(query, keys, values, bias)
        h = self.post(self.norm_self, x[:, None], self.self_attn.merge(attended), self.gate_self)
        h, weights = self.read_memory_and_ffn(h, memory_keys, memory_values, memory_times, token_time[:, None])
        return h[:, 0], weights


class ElmurCore(nn.Module):
    """Token embedding plus a stack of ELMUR layers.

    :param config: the architecture
    :param input_dim: width of the features each step's token is made from
    """

    def __init__(self, config: ElmurConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.embed = nn.Linear(input_dim, config.d_model)
        self.position = nn.Embedding(config.segment_len, config.d_model) if config.position_embedding else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.02)
        self.layers = nn.ModuleList(ElmurLayer(config) for _ in range(config.n_layers))
        # Pre-norm layers pass on an un-normed residual stream; the heads read it normed.
        self.norm_out = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()

    def head_input(self, h: th.Tensor) -> th.Tensor:
        """What the policy and value heads read of the last layer's output tokens."""
        return self.norm_out(h) * self.config.output_scale

    def initial_segment_start(self, batch_size: int, device: th.device | str) -> SegmentStart:
        """Fresh episodes: every memory slot empty (the cache is masked by episode time)."""
        c = self.config
        memory = initial_memory(c.n_layers, batch_size, c.memory_slots, c.d_model, c.memory_init_std, device)
        return SegmentStart(memory, th.zeros((c.n_layers, batch_size, c.cache_len, c.d_model), device=device))

    def memory_keys_values(self, vectors: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The memory read's keys and values of every layer's memory ``(n_layers, B, M, d)``."""
        keys, values = zip(*(layer.read.keys_values(layer_vectors) for layer, layer_vectors in zip(self.layers, vectors)))
        return th.stack(keys), th.stack(values)

    def _reproject_rows(self, state: ElmurCoreState, vectors: th.Tensor, rows: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Copies of the state's memory read keys and values, with ``rows`` projected from their new memory ``vectors``."""
        memory_keys, memory_values = state.memory_keys.clone(), state.memory_values.clone()
        memory_keys[:, rows], memory_values[:, rows] = self.memory_keys_values(vectors[:, rows])
        return memory_keys, memory_values

    def initial_state(self, batch_size: int, device: th.device | str) -> ElmurCoreState:
        """Fresh episodes: empty memory, episode time 0 (the caches are masked until written)."""
        c = self.config
        d_head = c.d_model // c.n_heads
        zeros = lambda *shape: th.zeros((c.n_layers, batch_size, *shape), device=device)  # noqa: E731
        start = self.initial_segment_start(batch_size, device)
        memory_keys, memory_values = self.memory_keys_values(start.memory.vectors)
        return ElmurCoreState(
            start=start,
            keys=zeros(c.n_heads, c.cache_len + c.segment_len, d_head),
            values=zeros(c.n_heads, c.cache_len + c.segment_len, d_head),
            inputs=zeros(c.segment_len, c.d_model),
            outputs=zeros(c.segment_len, c.d_model),
            memory_keys=memory_keys,
            memory_values=memory_values,
            episode_time=th.zeros(batch_size, dtype=th.long, device=device),
        )

    def reset(self, state: ElmurCoreState, episode_start: th.Tensor) -> ElmurCoreState:
        """Rows where ``episode_start`` is set get a fresh episode's state; other rows are untouched.

        Only the memory (and its read keys and values) and the episode time change: every cached token
        is then masked, its episode time being negative or its segment position ahead of the current one.
        """
        start = episode_start.bool()
        fresh = self.initial_segment_start(len(start), state.episode_time.device).memory
        memory = state.start.memory
        memory = Memory(
            th.where(start[None, :, None, None], fresh.vectors, memory.vectors),
            th.where(start[:, None], fresh.times, memory.times),
        )
        memory_keys, memory_values = self._reproject_rows(state, memory.vectors, start.nonzero()[:, 0])
        return dataclasses.replace(
            state,
            start=SegmentStart(memory, state.start.cache),
            memory_keys=memory_keys,
            memory_values=memory_values,
            episode_time=th.where(start, 0, state.episode_time),
        )

    def with_memory(self, state: ElmurCoreState, memory: Memory) -> ElmurCoreState:
        """The state with another memory (an intervention: a wiped or edited memory), its read keys and
        values projected anew; the attention cache and the episode time are kept."""
        memory_keys, memory_values = self.memory_keys_values(memory.vectors)
        start = SegmentStart(memory, state.start.cache)
        return dataclasses.replace(state, start=start, memory_keys=memory_keys, memory_values=memory_values)

    def tokens(self, features: th.Tensor, position: th.Tensor) -> th.Tensor:
        """Token embeddings of ``features (..., input_dim)`` at segment positions ``position``."""
        h = self.embed(features)
        return h if self.position is None else h + self.position(position)

    def next_segment_start(
        self, start: SegmentStart, layer_inputs: list[th.Tensor], layer_outputs: list[th.Tensor], token_times: th.Tensor
    ) -> SegmentStart:
        """Memory and cache after a completed segment.

        :param layer_inputs: each layer's input tokens of the segment, ``(B, L, d)``
        :param layer_outputs: each layer's output tokens of the segment, ``(B, L, d)``
        :param token_times: their episode times ``(B, L)``
        """
        memory = start.memory
        slot_vectors, slot_times = memory.vectors, memory.times
        if self.config.use_lru:
            # A slot's candidate depends on that slot alone (its vector, its timestamp, the tokens), and the
            # LRU rule writes one slot: compute that slot's candidate only, (n_layers, B, 1, d), not all M.
            slot = lru_slot_mask(memory.times)[0].int().argmax(dim=-1)
            rows = th.arange(len(slot), device=slot.device)
            slot_vectors, slot_times = memory.vectors[:, rows, slot].unsqueeze(2), memory.times[rows, slot].unsqueeze(1)
        candidates = th.stack(
            [
                layer.memory_candidates(slot_vectors[i], slot_times, layer_outputs[i], token_times)
                for i, layer in enumerate(self.layers)
            ]
        )
        gate = None
        if self.config.write_gate:
            gate = th.stack([layer.write_strength(layer_candidates) for layer, layer_candidates in zip(self.layers, candidates)])
        vectors, times = write_memory(
            memory.vectors, memory.times, candidates, token_times[:, -1], self.config.lru_blend, self.config.use_lru, gate
        )
        cache = th.cat([start.cache, th.stack(layer_inputs)], dim=2)
        return SegmentStart(Memory(vectors, times), cache[:, :, cache.shape[2] - self.config.cache_len :])

    def step(self, features: th.Tensor, state: ElmurCoreState) -> tuple[th.Tensor, ElmurCoreState, th.Tensor]:
        """The step path: one token per row.

        :param features: ``(B, input_dim)``
        :return: output tokens ``(B, d_model)``, the next state, read weights of the last layer ``(B, H, 1, M)``
        """
        L, C = self.config.segment_len, self.config.cache_len
        position = state.episode_time % L
        rows = th.arange(len(position), device=position.device)
        memory = state.start.memory
        # The next state's buffers: copies written in place at each row's position, so that the
        # state passed in stays valid (callers may keep it) and no step re-stacks the whole state.
        keys, values, inputs, outputs = (x.clone() for x in (state.keys, state.values, state.inputs, state.outputs))
        h = self.tokens(features, position)
        for i, layer in enumerate(self.layers):
            inputs[i, rows, position] = h
            h, weights = layer.forward_step(
                h, state.memory_keys[i], state.memory_values[i], memory.times, state.episode_time, keys[i], values[i], position
            )
            outputs[i, rows, position] = h

        start, memory_keys, memory_values = state.start, state.memory_keys, state.memory_values
        segment_done = position == L - 1
        if bool(segment_done.any()):
            token_times = state.episode_time[:, None] - (L - 1) + th.arange(L, device=h.device)
            written = self.next_segment_start(start, inputs.unbind(), outputs.unbind(), token_times)
            done = segment_done[None, :, None, None]
            memory = Memory(
                th.where(done, written.memory.vectors, memory.vectors),
                th.where(segment_done[:, None], written.memory.times, memory.times),
            )
            start = SegmentStart(memory, th.where(done, written.cache, start.cache))
            finished = segment_done.nonzero()[:, 0]
            memory_keys, memory_values = self._reproject_rows(state, memory.vectors, finished)
            if C:  # the next segment's cached keys and values, projected once per segment
                for i, layer in enumerate(self.layers):
                    keys[i, finished, :, :C], values[i, finished, :, :C] = layer.self_keys_values(start.cache[i, finished])
        next_state = ElmurCoreState(start, keys, values, inputs, outputs, memory_keys, memory_values, state.episode_time + 1)
        return self.head_input(h), next_state, weights

    def forward_segment(
        self, features: th.Tensor, start: SegmentStart, start_time: th.Tensor
    ) -> tuple[th.Tensor, SegmentStart, th.Tensor]:
        """The segment path: whole segments, each starting at position 0 of its segment.

        Rows may be shorter than ``segment_len`` at the end (padding there cannot reach
        earlier tokens through the causal mask); the segment start they return is then meaningless.

        :param features: ``(B, T, input_dim)`` with ``T <= segment_len``
        :param start: memory and cache at the segments' start
        :param start_time: episode time of each segment's first step ``(B,)``
        :return: output tokens ``(B, T, d_model)``, the next segment's start (memory after the LRU
            write, cache), and the last layer's read weights ``(B, H, T, M)``
        """
        positions = th.arange(features.shape[1], device=features.device)
        token_times = start_time[:, None] + positions
        memory = start.memory
        h = self.tokens(features, positions)
        inputs, outputs = [], []
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            h, weights = layer.forward_segment(h, start.cache[i], memory.vectors[i], memory.times, token_times)
            outputs.append(h)
        return self.head_input(h), self.next_segment_start(start, inputs, outputs, token_times), weights
