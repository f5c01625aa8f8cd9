"""Training data whose every random draw is a pure function of (seed, epoch, index), and a loader that resumes.

Why: a run resumed from a checkpoint must see the batches the uninterrupted run would have seen. So nothing here
draws from a global random generator or depends on which worker loads an item:

* :class:`SeededShuffle` orders each epoch by ``torch.randperm`` seeded from (seed, epoch) and yields
  :class:`DrawKey` ``(seed, epoch, index)`` keys; the dataset seeds each item's own draws (style, crops) from them;
* :class:`ResumableDataLoader` counts the samples it has delivered; Lightning saves that position in every checkpoint
  (``state_dict``) and hands it back on resume (``load_state_dict``), before the epoch's first batch is drawn.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler

from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)


class DrawKey(NamedTuple):
    """What a training item is drawn from: the data seed, the epoch and the content index."""

    seed: int
    epoch: int
    index: int  # type: ignore[assignment]  # a field named as the key is read; shadows tuple.index, never called


def mix_seed(*parts: int | str) -> int:
    """A 63-bit generator seed from ``parts`` (BLAKE2b: stable across processes, platforms and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator_for(*parts: int | str) -> torch.Generator:
    """A fresh CPU generator seeded from ``parts``: draws that depend on nothing else."""
    return torch.Generator().manual_seed(mix_seed(*parts))


def resolve_seed(seed: Any) -> int:
    """``data.seed``, or when null the run's seed (``PL_GLOBAL_SEED``, set by ``seed_everything``), or torch's."""
    if seed is None:
        from_run = os.environ.get("PL_GLOBAL_SEED")
        return int(from_run) if from_run is not None else int(torch.initial_seed())
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"data.seed must be an integer >= 0, or null for the run's seed; got {seed!r}")
    return seed


class SeededShuffle(DistributedSampler):
    """Each epoch a permutation of the dataset drawn from (seed, epoch) only, sharded over ranks.

    Shards as :class:`~torch.utils.data.DistributedSampler` does (padded to a multiple of ``num_replicas``, every
    ``num_replicas``-th position from ``rank``), and is one, so Lightning keeps it under DDP instead of replacing it.
    Yields :class:`DrawKey` keys. ``delivered`` (samples of this epoch already handed out, counted by
    :class:`ResumableDataLoader`) is where the next iteration starts, so a restored position is skipped without
    loading anything. Epochs are counted here (:meth:`next_epoch`), not taken from Lightning (:meth:`set_epoch`).
    """

    def __init__(self, dataset: Any, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.size = len(dataset)
        self.delivered = 0
        self.following = True

    def set_epoch(self, epoch: int) -> None:
        """Lightning's epoch, followed only until a sample is delivered or a position restored.

        After that the sampler counts epochs itself: a checkpoint written when a run stopped mid-epoch (Ctrl-C,
        SIGTERM) counts that epoch as finished, so on resume Lightning's count runs one ahead of the data, and
        following it would skip the rest of the interrupted epoch.
        """
        if self.following:
            self.epoch = epoch

    def next_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch, self.delivered = self.epoch + 1, 0

    def order(self, epoch: int) -> list[int]:
        """This rank's content indices for ``epoch``, in order."""
        order = torch.randperm(self.size, generator=generator_for("order", self.seed, epoch)).tolist()
        while len(order) < self.total_size:
            order += order[: self.total_size - len(order)]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[DrawKey]:
        seed, epoch = self.seed, self.epoch
        return iter([DrawKey(seed, epoch, index) for index in self.order(epoch)[self.delivered :]])

    def state_dict(self) -> dict[str, int]:
        """The position as plain integers; ``position`` counts samples over all ranks, so it survives a new world
        size."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.delivered * self.num_replicas,
            "size": self.size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position: its seed, its epoch, and its position unless the data set changed size."""
        keys = ("seed", "epoch", "position", "size")
        if not all(isinstance(state.get(key), int) and state[key] >= 0 for key in keys):
            raise ConfigError(
                f"ckpt_path: the checkpoint's training-data position {dict(state)!r} is not one this "
                f"version wrote; resume from a checkpoint of this project"
            )
        if state["seed"] != self.seed:
            log.warning(
                "resuming with the checkpoint's data seed %d instead of %d, so the data continue exactly",
                state["seed"],
                self.seed,
            )
        self.seed, self.epoch, self.delivered, self.following = state["seed"], state["epoch"], 0, False
        if state["size"] != self.size:
            log.warning(
                "the training set had %d images when the checkpoint was saved and has %d now: epoch %d starts "
                "again from its beginning, in a new order",
                state["size"],
                self.size,
                self.epoch,
            )
        else:
            self.delivered = state["position"] // self.num_replicas


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`SeededShuffle` that Lightning checkpoints and restores (``state_dict``).

    Batches come out as from a plain DataLoader (passed through ``on_fetch`` when given: it sees each batch as
    the training loop takes it, e.g. to start decoding it on the GPU); the loader only counts them into the
    sampler. Iterating again continues the current epoch where the last iteration stopped, or starts the next
    epoch once this one is finished (which is also how a finished epoch is saved).
    """

    def __init__(
        self, dataset: Any, sampler: SeededShuffle, on_fetch: Callable[[Any], Any] | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(sampler, SeededShuffle):
            raise TypeError(f"ResumableDataLoader needs a SeededShuffle sampler, got {type(sampler).__name__}")
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.shuffle: SeededShuffle = sampler  # self.sampler as its own type
        self.on_fetch = on_fetch
        self._live: object | None = None

    def _epoch_samples(self) -> int:
        """Samples this rank delivers in a full epoch."""
        return len(self) * self._batch() if self.drop_last else len(self.shuffle)

    def _batch(self) -> int:
        if self.batch_size is None:
            raise TypeError("ResumableDataLoader needs a batch_size")
        return self.batch_size

    def _finished(self) -> bool:
        return self.shuffle.delivered >= self._epoch_samples()

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over DataLoader's iterator
        """Start (lazily, at the first batch) where the sampler's position says; count what is delivered."""
        if self._finished():
            self.shuffle.next_epoch()
        token = self._live = object()
        for batch in super().__iter__():
            if self._live is token:
                self.shuffle.delivered += self._batch()
                self.shuffle.following = False
            yield batch if self.on_fetch is None else self.on_fetch(batch)

    def state_dict(self) -> dict[str, int]:
        """The sampler's position; a finished epoch is saved as the start of the next."""
        state = self.shuffle.state_dict()
        if self._finished():
            state.update(epoch=state["epoch"] + 1, position=0)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`, possibly of another process)."""
        self.shuffle.load_state_dict(state)
