"""The embedded default data set: Debian's `dataset-fashion-mnist` (60k + 10k real 28×28 images).

torchvision's FashionMNIST reads the idx files once they are gunzipped into
`<root>/FashionMNIST/raw/`; we do that once into a cache folder and never download.
"""
import gzip
import shutil
from pathlib import Path

from torchvision import datasets, transforms

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
    return datasets.FashionMNIST(_unpack(), train=train, transform=_transform(img_size, train), download=False)
