"""A tiny generated ImageFolder data set, so tests never depend on anything outside the repo."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root, num_classes=3, train_per_class=8, val_per_class=4, size=40, seed=0):
    """Write `root/{train,val}/class_k/*.png`; each class has its own mean colour, so it is learnable."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(num_classes):
            folder = Path(root) / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                noise = rng.normal(0, 40, size=(size, size, 3))
                pixels = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return Path(root)
