"""Images per second of the torchvision and DALI loaders (train and val transforms), and their ratio.

    python bench/loaders.py                                  # generated JPEGs, ImageNet-like sizes
    python bench/loaders.py --data_path /data/imagenet --images 5000 --workers 8
    python bench/loaders.py --write DIR --images 2048        # only write the generated folder

Without --data_path it writes `--images` random 500×375 JPEGs (about ImageNet's mean size) into a
temporary ImageFolder. Each loader is read once to warm up (worker start, DALI's first run), then
timed over `--epochs` passes; on CUDA the batches are moved to (or decoded on) the GPU and the
clock waits for it. DALI is skipped, with a note, when it is not installed.
"""
import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import build_loaders, dali  # noqa: E402


MIN_BATCHES = 4  # per pass; fewer and DALI's prefetched batches are most of what gets timed


def refuse(message):
    """Bad input: one line, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _write_jpeg(path, index, seed):
    """One 500×375 (landscape) or 375×500 JPEG: a smooth colour field plus noise, seeded per image."""
    rng = np.random.default_rng((seed, index))
    h, w = (375, 500) if index % 3 else (500, 375)
    coarse = rng.integers(0, 256, size=(h // 25, w // 25, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    pixels = np.clip(pixels + rng.normal(0, 12, size=pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_jpeg_folder(root, images, classes=4, seed=0, workers=1):
    """`root/{train,val}/class_k/*.jpg`, `images` per split, written by `workers` processes."""
    jobs = []
    for split_index, split in enumerate(("train", "val")):
        for i in range(images):
            folder = Path(root) / split / f"class_{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{i}.jpg", split_index * images + i, seed))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_jpeg, *zip(*jobs), chunksize=64))
    return Path(root)


def images_per_second(loader, device, epochs):
    for _ in loader:  # warm-up pass
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for images, target in loader:
            images = images.to(device, non_blocking=True)
            seen += target.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default=None, help="an ImageFolder tree with train/ and val/ (default: generated)")
    p.add_argument("--images", type=int, default=256, help="generated images per split")
    p.add_argument("--img_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes / DALI threads")
    p.add_argument("--epochs", type=int, default=2, help="timed passes after one warm-up pass")
    p.add_argument("--write", metavar="DIR", default=None,
                   help="only write the generated JPEG folder into DIR (for training runs) and exit")
    args = p.parse_args()
    # DALI prepares batches ahead (its prefetch queue), also across the end of a pass: with only a
    # few batches per pass the timed passes find them ready and report absurd rates.
    if not args.write and not args.data_path and args.images < MIN_BATCHES * args.batch_size:
        refuse(f"--images {args.images}: at least {MIN_BATCHES} batches of --batch_size "
               f"{args.batch_size} per split ({MIN_BATCHES * args.batch_size} images) for a meaningful rate")
    if args.write:
        make_jpeg_folder(args.write, args.images, workers=os.cpu_count())
        print(f"wrote {2 * args.images} JPEGs under {args.write}")
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data_path = args.data_path or make_jpeg_folder(tmp, args.images, workers=args.workers)
        options = dict(data_path=str(data_path), img_size=args.img_size, workers=args.workers, seed=0,
                       train_batch_size=args.batch_size, eval_batch_size=args.batch_size,
                       train_images=None, val_images=None)
        rates = {}
        for name in ("torchvision", "dali"):
            if name == "dali" and not dali.available():
                print(f"dali: not installed ({dali.INSTALL})")
                continue
            train, val, _ = build_loaders(argparse.Namespace(**options, use_dali=name == "dali"), device=device)
            if min(len(train), len(val)) < MIN_BATCHES:
                refuse(f"--data_path {args.data_path}: at least {MIN_BATCHES} batches of --batch_size "
                       f"{args.batch_size} per split for a meaningful rate")
            rates[name] = {"train": images_per_second(train, device, args.epochs),
                           "val": images_per_second(val, device, args.epochs)}
    print(f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
          f"{args.workers} workers, batch {args.batch_size}, {args.img_size} px, "
          f"{'generated 500×375 JPEGs' if not args.data_path else args.data_path}")
    print(f"{'loader':<12} {'train img/s':>12} {'val img/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<12} {rate['train']:>12.1f} {rate['val']:>10.1f}")
    if len(rates) == 2:
        print(f"{'dali/tv':<12} {rates['dali']['train'] / rates['torchvision']['train']:>12.2f}x "
              f"{rates['dali']['val'] / rates['torchvision']['val']:>9.2f}x")


if __name__ == "__main__":
    main()
