"""Seeded, resumable, rank-sharded batches: the training loop's data position is just the step number.

Each epoch is a seeded permutation of the rows cut into *global* batches (the remainder is dropped). Global
batch ``s`` is the same set of rows whatever the number of processes: process ``r`` of ``W`` takes the
``r``-th of ``W`` equal slices and splits it into ``accum`` micro-batches. :meth:`BatchStream.seek` jumps to
any step by replaying the permutations, so a resumed run reads exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


class BatchStream(Iterator[Any]):
    """Yields ``make_batch(indices)`` micro-batches forever; ``indices``: (micro_batch,) int64 row numbers."""

    def __init__(self, dataset_len: int, batch_size: int, make_batch: Callable[[torch.Tensor], Any], seed: int):
        if dataset_len < 1:
            raise ValueError("cannot train on an empty dataset")
        self.dataset_len, self.make_batch, self.seed = dataset_len, make_batch, seed
        self.batch_size = min(batch_size, dataset_len)  # the global batch
        self.rank, self.world, self.accum = 0, 1, 1
        self.seek(0)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // (self.world * self.accum)

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_len // self.batch_size

    def shard(self, *, rank: int, world: int, accum: int) -> BatchStream:
        """Read this process's share: slice ``rank`` of ``world``, as ``accum`` micro-batches per step."""
        if self.batch_size % (world * accum):
            raise ValueError(
                f"global batch {self.batch_size} cannot be split into {world} processes x {accum} micro-batches"
            )
        self.rank, self.world, self.accum = rank, world, accum
        return self.seek(self.step)

    def seek(self, step: int) -> BatchStream:
        """Position the stream at the first micro-batch of global batch ``step`` (0-based)."""
        self.step, self._micro = step, 0
        epoch, self._offset = divmod(step, self.batches_per_epoch)
        self._generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch + 1):  # replay the permutations of the epochs before
            self._perm = torch.randperm(self.dataset_len, generator=self._generator)
        return self

    def next_indices(self) -> torch.Tensor:
        """Row numbers of the next micro-batch of this process."""
        if self._offset == self.batches_per_epoch:
            self._perm, self._offset = torch.randperm(self.dataset_len, generator=self._generator), 0
        start = self._offset * self.batch_size + (self.rank * self.accum + self._micro) * self.micro_batch
        indices = self._perm[start : start + self.micro_batch]
        self._micro += 1
        if self._micro == self.accum:
            self._micro, self._offset, self.step = 0, self._offset + 1, self.step + 1
        return indices

    def __next__(self) -> Any:
        return self.make_batch(self.next_indices())
