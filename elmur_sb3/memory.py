"""Per-layer external memory of ELMUR and its least-recently-used (LRU) write rule.

The memory of one core is a stack over layers, ``vectors[l, b, j]`` for slot ``j`` of
layer ``l`` in batch row ``b``, plus one timestamp per slot, ``times[b, j]``: the episode
time of the slot's last write, ``-1`` while the slot is empty. Every layer writes once per
segment, at the same moment, and the slot choice depends on the timestamps alone, so the
timestamps of all layers are always equal: one ``times`` tensor serves the whole stack.
"""

from typing import NamedTuple

import torch as th

EMPTY = -1  # timestamp of a slot that has never been written


class Memory(NamedTuple):
    """Memory of every layer of a core for a batch of episodes.

    :param vectors: slot contents, shape ``(n_layers, batch, memory_slots, d_model)``
    :param times: episode time of each slot's last write (``-1`` = empty), shape ``(batch, memory_slots)``
    """

    vectors: th.Tensor
    times: th.Tensor

    def index(self, rows: th.Tensor | slice) -> "Memory":
        """The memory of some batch rows."""
        return Memory(self.vectors[:, rows], self.times[rows])


def initial_memory(
    n_layers: int, batch_size: int, memory_slots: int, d_model: int, init_std: float, device: th.device | str
) -> Memory:
    """All slots empty; contents ``init_std * N(0, 1)`` (zeros when ``init_std == 0``, a deterministic start)."""
    shape = (n_layers, batch_size, memory_slots, d_model)
    vectors = th.zeros(shape, device=device)
    if init_std > 0:
        vectors.normal_(0.0, init_std)
    times = th.full((batch_size, memory_slots), EMPTY, dtype=th.long, device=device)
    return Memory(vectors, times)


def lru_slot_mask(times: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Which slot the next write goes to, and whether that write blends into an occupied slot.

    The first empty slot is rewritten; once none is empty, the least recently written slot
    (``argmin`` of the timestamps; the lowest index on ties) is the target.

    :param times: slot timestamps, ``(batch, memory_slots)``
    :return: one-hot target mask ``(batch, memory_slots)`` and ``(batch,)`` "memory is full"
    """
    empty = times == EMPTY
    full = ~empty.any(dim=-1)
    # A full memory has no empty slot, so argmin over timestamps finds the LRU one; otherwise
    # argmax over the empty mask finds the first empty slot.
    target = th.where(full, times.argmin(dim=-1), empty.int().argmax(dim=-1))
    mask = th.nn.functional.one_hot(target, times.shape[-1]).bool()
    return mask, full


def write_memory(
    memory_vectors: th.Tensor,
    times: th.Tensor,
    candidates: th.Tensor,
    end_time: th.Tensor,
    lru_blend: float,
    use_lru: bool,
    gate: th.Tensor | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """Apply one segment's write to the memory of every layer.

    With ``use_lru`` one slot changes: an empty slot takes its candidate (rewrite), else the
    least recently written slot becomes ``lru_blend * candidate + (1 - lru_blend) * old``
    (update); its timestamp becomes ``end_time``. Without LRU (the paper's ablation) every
    slot is replaced by its candidate and stamped ``end_time``.

    :param memory_vectors: ``(n_layers, batch, slots, d)`` memory at the segment start
    :param times: ``(batch, slots)`` timestamps at the segment start
    :param candidates: ``(n_layers, batch, slots, d)`` the memory track's output ``u``; with ``use_lru``
        only the target slot's is read, so ``(n_layers, batch, 1, d)`` holding just that one also works
    :param end_time: ``(batch,)`` episode time of the segment's last step
    :param gate: ``(n_layers, batch, slots or 1, 1)`` in (0, 1), a factor on ``lru_blend`` for updates of an
        occupied slot (rewrites of empty slots are whole); None leaves the paper's rule
    :return: new vectors and timestamps
    """
    stamped = end_time[:, None].expand_as(times)
    if not use_lru:
        return candidates, stamped.clone()
    target, full = lru_slot_mask(times)
    blend = th.where(full, lru_blend, 1.0).to(candidates.dtype)[None, :, None, None]
    if gate is not None:
        blend = blend * th.where(full[None, :, None, None], gate, 1.0)
    written = blend * candidates + (1.0 - blend) * memory_vectors
    vectors = th.where(target[None, :, :, None], written, memory_vectors)
    return vectors, th.where(target, stamped, times)
