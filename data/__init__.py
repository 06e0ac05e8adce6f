"""One entry point for the data: `build_loaders(args)` → (train loader or None, val loader, classes in data)."""
import torch
from torch.utils.data import DataLoader, Subset

from . import fashion_mnist, imagefolder
from .sampling import EpochSampler, SeededDataset


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


def _loader(dataset, batch_size, shuffle, args):
    sampler = EpochSampler(len(dataset), args.seed, shuffle)
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0)


def build_loaders(args, need_train=True):
    """DataLoaders whose samplers are `EpochSampler`s: call `loader.sampler.set_epoch` before each epoch."""
    train, val, classes = build_datasets(args, need_train)
    train_loader = _loader(train, args.train_batch_size, True, args) if train is not None else None
    return train_loader, _loader(val, args.eval_batch_size, False, args), classes
