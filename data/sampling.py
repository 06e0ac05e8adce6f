"""Data order and augmentation as pure functions of (seed, epoch, position), for exact resume.

A run interrupted mid-epoch resumes at the same batch with the same images and the same random
crops as an uninterrupted run: the sampler's order depends only on (seed, epoch), it can start
at any batch, and every sample's augmentation is drawn from a generator seeded by
(seed, epoch, index) — whatever worker loads it and whatever was loaded before.
"""
import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler):
    """Yields (sample_seed, index) pairs; shuffled per epoch, sharded `rank::world_size`, no padding."""

    def __init__(self, size, seed, shuffle, rank=0, world_size=1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        """Select the epoch's order; skip the first `start` samples of this rank (a mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def _order(self):
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def __iter__(self):
        mine = self._order()[self.rank::self.world_size][self.start:]
        base = (self.seed * 100_003 + self.epoch) * 1_000_003
        return iter([(base + int(i), int(i)) for i in mine])

    def __len__(self):
        return len(range(self.rank, self.size, self.world_size)) - self.start


class SeededDataset(Dataset):
    """Wraps a map-style data set so that `dataset[(seed, index)]` augments with its own seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        seed, index = key
        # torchvision's random transforms draw from torch's global generator: fork it so the
        # caller's stream (dropout, the next sample) is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            except (OSError, ValueError) as error:  # PIL: truncated or not an image
                raise BadImage(f"unreadable image {_path_of(self.dataset, index)}: {error} "
                               "(remove or replace it)") from None


class BadImage(RuntimeError):
    pass


def _path_of(dataset, index):
    """The file behind `index` (through Subset wrappers), for error messages."""
    while hasattr(dataset, "indices"):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples else f"#{index}"
