"""One entry point for the data: `build_loaders(args)` → (train loader or None, val loader, classes in data)."""
import torch
from torch.utils.data import DataLoader, Subset

from . import fashion_mnist, imagefolder
from .sampling import EpochSampler, SeededDataset
from .workers import ignore_sigterm_from_others


def _subset(dataset, limit, seed):
    """A fixed random subset (same for every epoch and rank), for quick runs on the embedded data."""
    if not limit or limit >= len(dataset):
        return dataset
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return Subset(dataset, indices.sort().values.tolist())


def build_datasets(args, need_train=True):
    """(train dataset or None, val dataset, number of classes present in the data)."""
    if args.data_path is None:
        train = fashion_mnist.fashion_mnist(True, args.img_size) if need_train else None
        val = fashion_mnist.fashion_mnist(False, args.img_size)
        classes = fashion_mnist.NUM_CLASSES
    else:
        train = (imagefolder.image_folder(imagefolder.train_dir(args.data_path), imagefolder.train_transform(args.img_size))
                 if need_train else None)
        val = imagefolder.image_folder(imagefolder.val_dir(args.data_path), imagefolder.val_transform(args.img_size))
        classes = len(val.classes)
    if train is not None:
        train = _subset(train, args.train_images, args.seed)
    return train, _subset(val, args.val_images, val_seed(args)), classes


def val_seed(args):
    """The --val_images subset follows --seed unless --val_seed fixes it (one val set for every seed)."""
    return args.seed if getattr(args, "val_seed", None) is None else args.val_seed


def _loader(dataset, batch_size, train, args, rank, world_size):
    sampler = EpochSampler(len(dataset), args.seed, shuffle=train, rank=rank, world_size=world_size, pad=train)
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0,
                      worker_init_fn=ignore_sigterm_from_others)


def build_loaders(args, need_train=True, rank=0, world_size=1, device=None):
    """Loaders for this process: (train loader or None, val loader, classes in data).

    Under torchrun each of the `world_size` processes gets its own shard. `--train_batch_size`
    and `--eval_batch_size` are global: each process loads 1/world_size of a batch. Training
    shards are padded with a few repeated images so that every rank runs the same number of
    steps; validation shards are never padded, so every validation image counts exactly once.
    Call `set_epoch(loader, epoch)` before each training epoch.
    """
    if args.use_dali:
        from . import dali
        return dali.build_loaders(args, need_train, rank, world_size, device)
    train, val, classes = build_datasets(args, need_train)
    train_loader = (_loader(train, args.train_batch_size // world_size, True, args, rank, world_size)
                    if train is not None else None)
    val_loader = _loader(val, -(-args.eval_batch_size // world_size), False, args, rank, world_size)
    return train_loader, val_loader, classes


def set_epoch(loader, epoch, start=0):
    """Select `epoch`'s order and skip this rank's first `start` samples (a mid-epoch resume)."""
    (loader.sampler if isinstance(loader, DataLoader) else loader).set_epoch(epoch, start)
