"""The embedded default data set: Debian's `dataset-fashion-mnist` (60k + 10k real 28×28 images).

torchvision's FashionMNIST reads the idx files once they are gunzipped into
`<root>/FashionMNIST/raw/`; we do that once into a cache folder and never download.
"""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path(__file__).resolve().parent / "cache"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MEAN, STD = 0.2860, 0.3530
NUM_CLASSES = 10


def _unpack(source=SOURCE, root=CACHE):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (raw / name).exists():
            continue
        packed = source / f"{name}.gz"
        if not packed.exists():
            raise FileNotFoundError(f"{packed} is missing: install Debian's dataset-fashion-mnist "
                                    "(apt-get install dataset-fashion-mnist) or pass --data_path")
        tmp = raw / f"{name}.tmp"
        with gzip.open(packed) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(raw / name)
    return root


def _transform(img_size, train):
    # Gray → 3 channels so the ImageNet models run unchanged; a light crop/flip for training.
    augment = [transforms.RandomCrop(img_size, padding=img_size // 8), transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose([transforms.Grayscale(3), transforms.Resize(img_size), *augment,
                               transforms.ToTensor(), transforms.Normalize((MEAN,) * 3, (STD,) * 3)])


def fashion_mnist(train, img_size):
    if not train:
        return ResizedTestSet(img_size)
    return datasets.FashionMNIST(_unpack(), train=train, transform=_transform(img_size, train), download=False)


class ResizedTestSet(Dataset):
    """The test split with the test transform, resized once and cached in CACHE (uint8, one file per
    size): every evaluation of the 10,000 images then skips PIL. Items equal the PIL pipeline's
    bit for bit (the resize is PIL's own; the rest is ToTensor's ÷255 and the same Normalize)."""

    def __init__(self, img_size):
        self.images, self.targets = _resized_test_images(img_size)
        self.classes = datasets.FashionMNIST.classes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = self.images[index].float().div(255).expand(3, -1, -1)
        return TF.normalize(image, (MEAN,) * 3, (STD,) * 3), int(self.targets[index])


def _resized_test_images(img_size, root=None):
    root = root or _unpack()
    path = root / "FashionMNIST" / f"test_{img_size}px.pt"
    if path.exists():
        cached = torch.load(path, weights_only=True)
        return cached["images"], cached["targets"]
    raw = datasets.FashionMNIST(root, train=False, download=False)
    resize = transforms.Resize(img_size)
    images = torch.from_numpy(np.stack([np.asarray(resize(Image.fromarray(x.numpy(), mode="L"))) for x in raw.data]))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")   # several processes may build it at once
    torch.save({"images": images, "targets": raw.targets}, tmp)
    tmp.replace(path)
    return images, raw.targets
