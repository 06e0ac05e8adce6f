"""ImageNet-style class folders, with the authors' transforms (SPEC §6) scaled to `img_size`."""
from pathlib import Path

from torchvision import datasets, transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_transform(img_size):
    return transforms.Compose([transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0)),
                               transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(MEAN, STD)])


def val_transform(img_size):
    # 224 → Resize(256): the usual 0.875 centre-crop ratio.
    return transforms.Compose([transforms.Resize(round(img_size / 0.875)), transforms.CenterCrop(img_size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def train_dir(data_path):
    """`<data>/train`, or `<data>/ILSVRC2012_img_train` as in the authors' DALI loader."""
    _check_root(data_path)
    for name in ("train", "ILSVRC2012_img_train"):
        if (Path(data_path) / name).is_dir():
            return Path(data_path) / name
    raise FileNotFoundError(f"--data_path {data_path}: no train/ (or ILSVRC2012_img_train/) folder of class sub-folders")


def _check_root(data_path):
    if not Path(data_path).is_dir():
        what = "is a file, not a folder" if Path(data_path).exists() else "no such folder"
        raise FileNotFoundError(f"--data_path {data_path}: {what}")


def val_dir(data_path):
    _check_root(data_path)
    path = Path(data_path) / "val"
    if not path.is_dir():
        raise FileNotFoundError(f"--data_path {data_path}: no val/ folder of class sub-folders")
    return path


def image_folder(path, transform):
    try:
        return datasets.ImageFolder(path, transform)
    except FileNotFoundError as error:  # torchvision says "Couldn't find any class folder" or "Found no valid file"
        raise FileNotFoundError(f"--data_path: {error}") from None
