"""One entry point for the data: `build_loaders(args)` → (train loader or None, val loader, classes in data)."""
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import fashion_mnist, imagefolder


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
    return train, _subset(val, args.val_images, args.seed), classes


def build_loaders(args, need_train=True, rank=0, world_size=1, device=None):
    """Loaders for this process: (train loader or None, val loader, classes in data).

    Under torchrun each of the `world_size` processes gets its own shard. `--train_batch_size`
    and `--eval_batch_size` are global: each process loads 1/world_size of a batch. Training
    shards come from DistributedSampler (reshuffled by `set_epoch`; it may repeat a few images
    so that every rank runs the same number of steps); validation shards are rank::world_size,
    never padded, so every validation image is counted exactly once.
    """
    if args.use_dali:
        from . import dali
        return dali.build_loaders(args, need_train, rank, world_size, device)
    train, val, classes = build_datasets(args, need_train)
    common = dict(num_workers=args.workers, pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0)
    train_loader = None
    if train is not None:
        # The generator also seeds the worker processes; it is kept (and checkpointed) under DDP too.
        generator = torch.Generator().manual_seed(args.seed)
        if world_size == 1:
            order = dict(shuffle=True)
        else:
            order = dict(sampler=DistributedSampler(train, world_size, rank, shuffle=True, seed=args.seed))
        train_loader = DataLoader(train, batch_size=args.train_batch_size // world_size, drop_last=False,
                                  generator=generator, **order, **common)
    val_loader = DataLoader(val, batch_size=-(-args.eval_batch_size // world_size), shuffle=False,
                            sampler=range(rank, len(val), world_size) if world_size > 1 else None, **common)
    return train_loader, val_loader, classes


def set_epoch(loader, epoch):
    """Reshuffle a DistributedSampler for `epoch` (the same order on every rank, other shards)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
