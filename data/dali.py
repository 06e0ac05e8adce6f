"""NVIDIA DALI loaders for ImageFolder data (`--use_dali`): the torchvision path's augmentations.

Train: random-resized crop (area 0.08–1, aspect 3/4–4/3) → img_size², horizontal flip, normalise.
Val: resize the shorter side to img_size/0.875, centre crop img_size², normalise.
On CUDA the JPEGs are decoded on the GPU (the "mixed" decoder) and batches arrive on the GPU;
without CUDA the same pipeline runs on the CPU (so it is tested without a GPU).

The file list is built by torchvision's own ImageFolder rules, so labels, `--train_images` and
`--val_images` subsets are the same as on the torchvision path. Each torchrun process reads its
own shard (DALI's shard_id/num_shards). Validation shards are not padded and the last batch is
partial, so every validation image is counted exactly once.
"""
import importlib.util

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from . import _subset, imagefolder, val_seed

INSTALL = "pip install -r requirements-dali.txt"
_MEAN = [255 * m for m in imagefolder.MEAN]
_STD = [255 * s for s in imagefolder.STD]


def available():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def image_list(folder, limit=None, seed=0):
    """(files, labels, number of classes) of an ImageFolder tree, as torchvision's ImageFolder sees it."""
    classes, class_to_idx = find_classes(folder)
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    if not samples:
        raise FileNotFoundError(f"{folder}: no image files in its class folders")
    samples = list(_subset(samples, limit, seed))
    return [str(path) for path, _ in samples], [label for _, label in samples], len(classes)


def _pipeline(files, labels, train, img_size, shard_id, num_shards, gpu):
    """The DALI graph (built inside `pipeline_def`, which supplies batch size, threads, device, seed)."""
    from nvidia.dali import fn, types

    jpegs, labels = fn.readers.file(
        files=files, labels=labels, name="Reader", shard_id=shard_id, num_shards=num_shards,
        # Train: the file list is already one global permutation (the same on every rank, so the
        # shards stay disjoint); DALI reshuffles it after every epoch. Its `random_shuffle` would
        # only shuffle within a 1024-image buffer, i.e. within a class of a sorted ImageNet list.
        shuffle_after_epoch=train,
        # Train: pad every shard to the same number of batches, so DDP ranks run the same number
        # of steps. Val: no padding, every image exactly once.
        pad_last_batch=train and num_shards > 1)
    decoder = "mixed" if gpu else "cpu"
    if train:
        images = fn.decoders.image_random_crop(jpegs, device=decoder, output_type=types.RGB,
                                               random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                               num_attempts=10)
        images = fn.resize(images, resize_x=img_size, resize_y=img_size, interp_type=types.INTERP_LINEAR)
        mirror = fn.random.coin_flip(probability=0.5)
    else:
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=round(img_size / 0.875), interp_type=types.INTERP_LINEAR)
        mirror = 0
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", crop=(img_size, img_size),
                                      mean=_MEAN, std=_STD, mirror=mirror)
    return images, labels.gpu() if gpu else labels


class DaliLoader:
    """A DALI iterator that yields (images, int64 labels) like a DataLoader and has a length."""

    def __init__(self, files, labels, train, img_size, batch_size, threads, rank, world_size, device, seed):
        from nvidia.dali import pipeline_def
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        gpu = device is not None and device.type == "cuda"
        pipe = pipeline_def(_pipeline)(
            files, labels, train, img_size, rank, world_size, gpu,
            batch_size=batch_size, num_threads=threads, device_id=device.index if gpu else None,
            seed=seed + rank)  # augmentation differs between ranks
        pipe.build()
        # PARTIAL: the last batch holds only what is left (of the shard, padding dropped), as
        # DataLoader(drop_last=False) does.
        self.iterator = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=True,
                                            last_batch_policy=LastBatchPolicy.PARTIAL)
        self.batch_size = batch_size
        self.skip = 0

    def set_epoch(self, epoch, start=0):
        """Skip the first `start` images (whole batches) of the next epoch; `epoch` is not used.

        DALI orders epochs itself (`shuffle_after_epoch`: every epoch, the first included, in an
        order drawn from its own fixed seed, the same sequence in every process) and cannot be
        positioned at a given epoch. A restarted process therefore begins again with the first
        epoch's order and augmentation draws (tests/test_dali.py). So a resume is exact in the images it skips only
        within the first epoch; after it, the skipped
        batches are the first ones of that first-epoch order, not the ones already trained on (some
        images of the resumed epoch are seen twice, others not at all), and later epochs come in
        other orders than in an uninterrupted run. Resuming with DALI continues training; it does
        not reproduce the uninterrupted run."""
        self.skip = start // self.batch_size

    def __len__(self):
        return len(self.iterator) - self.skip

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for i, (batch,) in enumerate(self.iterator):
            if i >= skip:
                yield batch["images"], batch["labels"].squeeze(-1).long()


def build_loaders(args, need_train, rank, world_size, device):
    """(train loader or None, val loader, classes in data) for this rank; batch sizes are global."""
    threads = max(1, args.workers)
    files, labels, classes = image_list(imagefolder.val_dir(args.data_path), args.val_images, val_seed(args))
    val = DaliLoader(files, labels, False, args.img_size, -(-args.eval_batch_size // world_size), threads,
                     rank, world_size, device, args.seed)
    train = None
    if need_train:
        files, labels, _ = image_list(imagefolder.train_dir(args.data_path), args.train_images, args.seed)
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(args.seed)).tolist()
        train = DaliLoader([files[i] for i in order], [labels[i] for i in order], True, args.img_size,
                           args.train_batch_size // world_size, threads, rank, world_size, device, args.seed)
    return train, val, classes
