"""ELMUR: a transformer whose every layer owns a small external memory (arXiv 2510.07151).

One token per environment step. An episode is cut into segments of ``segment_len`` steps,
counted from the episode start. Inside a segment a layer does

    token track   h = Norm(h + SelfAttn_causal(h))          relative positions in the segment
                  h = Norm(h + CrossAttn(h -> m, B(t - p)))  read: tokens attend to the memory
                  h = Norm(h + FFN(h))
    memory track  u = Norm(m + CrossAttn(m -> h, B(p - t)))  write: the memory attends to the tokens
                  u = Norm(u + FFN_mem(u))

and once the segment's last step is processed the LRU rule (``memory.write_memory``) puts
``u`` into one slot. ``t`` are the tokens' episode times, ``p`` the slots' timestamps and
``B`` a learned per-head bias over the clamped distance, so that any distance beyond
``max_dist`` reads as "long ago": that is what lets a model trained on short episodes act
on far longer ones. Reads inside a segment see the memory as it was at the segment start.

Two execution paths compute the same function:

- ``ElmurCore.step``: one token per batch row, self-attention keys/values cached for the
  current segment; cost per step O(segment_len + memory_slots), whatever the episode time.
- ``ElmurCore.forward_segment``: a whole segment per batch row at once, with a causal mask.
"""

import math
from dataclasses import dataclass

import torch as th
from torch import nn
from torch.nn import functional as F

from elmur_sb3.memory import Memory, initial_memory, write_memory


@dataclass
class ElmurConfig:
    """Architecture of an ELMUR core.

    :param d_model: token and memory width
    :param n_layers: number of layers, each with its own memory
    :param n_heads: attention heads (must divide ``d_model``)
    :param d_ff: hidden width of the feed-forward blocks (default ``4 * d_model``)
    :param segment_len: steps per segment (the attention window ``L``)
    :param memory_slots: slots per layer memory (``M``)
    :param lru_blend: weight of the new content when an occupied slot is updated, in (0, 1]
    :param use_lru: False replaces the whole memory every segment (the paper's ablation)
    :param memory_init_std: std of the initial slot contents (0 = deterministic zeros)
    :param max_dist: distances are clamped to ``[-max_dist, max_dist]`` in the memory bias
    :param position_embedding: add a learned embedding of the token's position inside its
        segment (the paper's code offers learned absolute positions as well). Without it a token
        knows its place only through the relative self-attention bias, which a memory read
        cannot use to pick "the step k back" once that step lies in the previous segment.
    :param dropout: dropout inside the layers; keep 0 for PPO (its ratio needs the rollout's function)
    """

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    segment_len: int = 16
    memory_slots: int = 8
    lru_blend: float = 0.8
    use_lru: bool = True
    memory_init_std: float = 0.0
    max_dist: int = 1024
    position_embedding: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in ("d_model", "n_layers", "n_heads", "segment_len", "memory_slots", "max_dist"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        need(
            self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
            f"try n_heads in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:8]}",
        )
        need(0.0 < self.lru_blend <= 1.0, f"lru_blend must lie in (0, 1], got {self.lru_blend!r}")
        need(self.memory_init_std >= 0.0, f"memory_init_std must be >= 0, got {self.memory_init_std!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        need(isinstance(self.d_ff, int) and self.d_ff >= 1, f"d_ff must be an integer >= 1, got {self.d_ff!r}")


@dataclass
class ElmurCoreState:
    """Recurrent state of a core for a batch of episodes (the step path's cache).

    :param memory: memory of every layer at the current segment's start
    :param keys: self-attention keys of the current segment's tokens, ``(n_layers, B, H, L, d_head)``
    :param values: self-attention values, same shape
    :param outputs: each layer's output tokens of the current segment, ``(n_layers, B, L, d_model)``
        (the memory write at the segment's end reads them)
    :param episode_time: episode time of the next token, ``(B,)``; its position in the segment
        is ``episode_time % segment_len``
    """

    memory: Memory
    keys: th.Tensor
    values: th.Tensor
    outputs: th.Tensor
    episode_time: th.Tensor

    def index(self, rows: th.Tensor | slice) -> "ElmurCoreState":
        """The state of some batch rows."""
        return ElmurCoreState(
            self.memory.index(rows), self.keys[:, rows], self.values[:, rows], self.outputs[:, rows], self.episode_time[rows]
        )


def attend(query: th.Tensor, key: th.Tensor, value: th.Tensor, bias: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Scaled dot-product attention with an additive bias (``-inf`` masks).

    :return: attended values ``(..., H, Tq, d_head)`` and the attention weights ``(..., H, Tq, Tk)``
    """
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1]) + bias
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
        self.segment_len = config.segment_len
        self.self_attn = MultiHeadAttention(d, h, p)
        # Learned bias per head over the distance i - j between two tokens of one segment.
        self.self_bias = nn.Parameter(th.zeros(h, config.segment_len))
        self.read = MultiHeadAttention(d, h, p)
        self.write = MultiHeadAttention(d, h, p)
        self.memory_bias = DistanceBias(h, config.max_dist)
        self.ffn = FeedForward(d, config.d_ff, p)
        self.memory_ffn = FeedForward(d, config.d_ff, p)
        self.norm_self, self.norm_read, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_write, self.norm_memory_ffn = nn.LayerNorm(d), nn.LayerNorm(d)

    def self_attention_bias(self, query_pos: th.Tensor, key_pos: th.Tensor) -> th.Tensor:
        """Causal relative bias; positions ``(..., Tq)`` and ``(..., Tk)`` -> ``(..., H, Tq, Tk)``."""
        distance = query_pos[..., :, None] - key_pos[..., None, :]
        bias = self.self_bias[:, distance.clamp(min=0)].movedim(0, -3)
        return bias.masked_fill((distance < 0).unsqueeze(-3), float("-inf"))

    def read_memory_and_ffn(
        self, h: th.Tensor, memory: th.Tensor, memory_times: th.Tensor, token_times: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Second and third steps of the token track; returns tokens and read-attention weights."""
        bias = self.memory_bias(token_times[:, :, None] - memory_times[:, None, :])
        read, weights = self.read(h, memory, bias)
        h = self.norm_read(h + read)
        return self.norm_ffn(h + self.ffn(h)), weights

    def memory_candidates(
        self, memory: th.Tensor, memory_times: th.Tensor, tokens: th.Tensor, token_times: th.Tensor
    ) -> th.Tensor:
        """The memory track: what this segment would write into each slot, ``(B, M, d)``."""
        bias = self.memory_bias(memory_times[:, :, None] - token_times[:, None, :])
        written, _ = self.write(memory, tokens, bias)
        u = self.norm_write(memory + written)
        return self.norm_memory_ffn(u + self.memory_ffn(u))

    def forward_segment(
        self, h: th.Tensor, memory: th.Tensor, memory_times: th.Tensor, token_times: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Token track over whole segments ``h (B, L, d)`` starting at position 0."""
        positions = th.arange(h.shape[1], device=h.device)
        attended, _ = attend(
            self.self_attn.queries(h), *self.self_attn.keys_values(h), self.self_attention_bias(positions, positions)
        )
        h = self.norm_self(h + self.self_attn.merge(attended))
        return self.read_memory_and_ffn(h, memory, memory_times, token_times)

    def forward_step(
        self,
        x: th.Tensor,
        memory: th.Tensor,
        memory_times: th.Tensor,
        token_time: th.Tensor,
        keys: th.Tensor,
        values: th.Tensor,
        position: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Token track for one token per row ``x (B, d)`` at segment position ``position (B,)``.

        :return: output token ``(B, d)``, updated key and value caches, read-attention weights
        """
        at_position = nn.functional.one_hot(position, self.segment_len).bool()  # (B, L)
        new_key, new_value = self.self_attn.keys_values(x[:, None])  # (B, H, 1, d_head)
        keys = th.where(at_position[:, None, :, None], new_key, keys)
        values = th.where(at_position[:, None, :, None], new_value, values)
        cache_positions = th.arange(self.segment_len, device=x.device)
        bias = self.self_attention_bias(position[:, None], cache_positions.expand(len(position), -1))
        attended, _ = attend(self.self_attn.queries(x[:, None]), keys, values, bias)
        h = self.norm_self(x[:, None] + self.self_attn.merge(attended))
        h, weights = self.read_memory_and_ffn(h, memory, memory_times, token_time[:, None])
        return h[:, 0], keys, values, weights


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

    def initial_memory(self, batch_size: int, device: th.device | str) -> Memory:
        c = self.config
        return initial_memory(c.n_layers, batch_size, c.memory_slots, c.d_model, c.memory_init_std, device)

    def initial_state(self, batch_size: int, device: th.device | str) -> ElmurCoreState:
        """Fresh episodes: empty memory, episode time 0 (the caches are masked until written)."""
        c = self.config
        cache_shape = (c.n_layers, batch_size, c.n_heads, c.segment_len, c.d_model // c.n_heads)
        return ElmurCoreState(
            memory=self.initial_memory(batch_size, device),
            keys=th.zeros(cache_shape, device=device),
            values=th.zeros(cache_shape, device=device),
            outputs=th.zeros((c.n_layers, batch_size, c.segment_len, c.d_model), device=device),
            episode_time=th.zeros(batch_size, dtype=th.long, device=device),
        )

    def reset(self, state: ElmurCoreState, episode_start: th.Tensor) -> ElmurCoreState:
        """Rows where ``episode_start`` is set get a fresh episode's state; other rows are untouched."""
        start = episode_start.bool()
        fresh = self.initial_memory(len(start), state.episode_time.device)
        return ElmurCoreState(
            memory=Memory(
                th.where(start[None, :, None, None], fresh.vectors, state.memory.vectors),
                th.where(start[:, None], fresh.times, state.memory.times),
            ),
            keys=state.keys,
            values=state.values,
            outputs=state.outputs,
            episode_time=th.where(start, 0, state.episode_time),
        )

    def tokens(self, features: th.Tensor, position: th.Tensor) -> th.Tensor:
        """Token embeddings of ``features (..., input_dim)`` at segment positions ``position``."""
        h = self.embed(features)
        return h if self.position is None else h + self.position(position)

    def update_memory(self, memory: Memory, layer_outputs: list[th.Tensor], token_times: th.Tensor) -> Memory:
        """Write a completed segment into the memory of every layer.

        :param layer_outputs: each layer's output tokens of the segment, ``(B, L, d)``
        :param token_times: their episode times ``(B, L)``
        """
        candidates = th.stack(
            [
                layer.memory_candidates(memory.vectors[i], memory.times, layer_outputs[i], token_times)
                for i, layer in enumerate(self.layers)
            ]
        )
        vectors, times = write_memory(
            memory.vectors, memory.times, candidates, token_times[:, -1], self.config.lru_blend, self.config.use_lru
        )
        return Memory(vectors, times)

    def step(self, features: th.Tensor, state: ElmurCoreState) -> tuple[th.Tensor, ElmurCoreState, th.Tensor]:
        """The step path: one token per row.

        :param features: ``(B, input_dim)``
        :return: output tokens ``(B, d_model)``, the next state, read weights of the last layer ``(B, H, 1, M)``
        """
        L = self.config.segment_len
        position = state.episode_time % L
        at_position = nn.functional.one_hot(position, L).bool()[:, :, None]
        memory = state.memory
        h = self.tokens(features, position)
        keys, values, outputs = [], [], []
        for i, layer in enumerate(self.layers):
            h, k, v, weights = layer.forward_step(
                h, memory.vectors[i], memory.times, state.episode_time, state.keys[i], state.values[i], position
            )
            keys.append(k)
            values.append(v)
            outputs.append(th.where(at_position, h[:, None], state.outputs[i]))

        segment_done = position == L - 1
        if bool(segment_done.any()):
            token_times = state.episode_time[:, None] - (L - 1) + th.arange(L, device=h.device)
            written = self.update_memory(memory, outputs, token_times)
            memory = Memory(
                th.where(segment_done[None, :, None, None], written.vectors, memory.vectors),
                th.where(segment_done[:, None], written.times, memory.times),
            )
        next_state = ElmurCoreState(memory, th.stack(keys), th.stack(values), th.stack(outputs), state.episode_time + 1)
        return h, next_state, weights

    def forward_segment(
        self, features: th.Tensor, memory: Memory, start_time: th.Tensor
    ) -> tuple[th.Tensor, Memory, th.Tensor]:
        """The segment path: whole segments, each starting at position 0 of its segment.

        Rows may be shorter than ``segment_len`` at the end (padding there cannot reach
        earlier tokens through the causal mask); the memory they return is then meaningless.

        :param features: ``(B, T, input_dim)`` with ``T <= segment_len``
        :param memory: the memory at the segments' start
        :param start_time: episode time of each segment's first step ``(B,)``
        :return: output tokens ``(B, T, d_model)``, the memory after the LRU write, and the
            last layer's read weights ``(B, H, T, M)``
        """
        positions = th.arange(features.shape[1], device=features.device)
        token_times = start_time[:, None] + positions
        h = self.tokens(features, positions)
        outputs = []
        for i, layer in enumerate(self.layers):
            h, weights = layer.forward_segment(h, memory.vectors[i], memory.times, token_times)
            outputs.append(h)
        return h, self.update_memory(memory, outputs, token_times), weights
