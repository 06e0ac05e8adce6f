"""Data order and augmentation depend only on (seed, epoch, index): a resumed epoch sees exactly
the batches an uninterrupted one would have, with worker processes too."""
import argparse

import torch

from data import build_loaders, set_epoch


def loader_args(tiny_data, workers):
    return argparse.Namespace(data_path=str(tiny_data), img_size=32, train_images=None, val_images=None, seed=5,
                              workers=workers, train_batch_size=4, eval_batch_size=4, use_dali=False)


def batches(loader, epoch, start=0):
    set_epoch(loader, epoch, start)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_mid_epoch_start_gives_the_tail_of_the_epoch_with_workers(tiny_data):
    train, _, _ = build_loaders(loader_args(tiny_data, workers=2))
    full = batches(train, epoch=1)
    tail = batches(train, epoch=1, start=2 * 4)
    assert len(full) == 6 and len(tail) == 4
    for (a, la), (b, lb) in zip(full[2:], tail):
        assert torch.equal(a, b) and torch.equal(la, lb)     # same images, same random crops and flips
    other_epoch = batches(train, epoch=2)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(full, other_epoch))   # reshuffled


def test_the_same_epoch_is_the_same_with_or_without_workers(tiny_data):
    with_workers, _, _ = build_loaders(loader_args(tiny_data, workers=2))
    without, _, _ = build_loaders(loader_args(tiny_data, workers=0))
    for (a, la), (b, lb) in zip(batches(with_workers, 3), batches(without, 3)):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_shards_cover_validation_once_and_training_evenly(tiny_data):
    args = loader_args(tiny_data, workers=0)
    args.train_batch_size = 5   # global batches are split over the ranks
    shards = [build_loaders(args, rank=r, world_size=5) for r in range(5)]
    seen = sorted(i for train, val, _ in shards for _, i in val.sampler)
    assert seen == list(range(12))                                   # 12 val images, each once
    assert len({len(train.sampler) for train, _, _ in shards}) == 1  # same number of steps on every rank
