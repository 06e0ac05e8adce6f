"""Make this folder's packed mask file from the authors' reference data, and check that the
fixtures in tests/conftest.py rebuild the two files it replaces bit for bit.

    python tests/reference/shrink.py PATH/TO/shared/reference

Run once by hand (see README.md here); the tests never read anything outside tests/reference/.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from conftest import PACKED_MASKS, authors_pruned_checkpoint, authors_plain_masks_of  # noqa: E402

COPIED = ["mobilenet_v1.layout.json", "mobilenet_v2.layout.json", "mobilenet_v3_small.layout.json",
          "mobilenet_v3_large.layout.json", "mobilenet_v2_N4_rearrange.pretrained.pth",
          "mobilenet_v2_N4_rearrange.io.pth"]


def pack(masks):
    """{key: 0/1 tensor} → {key: (shape, bits as uint8)}: one bit per weight instead of 8 or 32."""
    return {k: (list(m.shape), torch.from_numpy(np.packbits(m.bool().flatten().numpy()))) for k, m in masks.items()}


def main(source):
    source = Path(source)
    for name in COPIED:
        shutil.copyfile(source / name, HERE / name)
    pruned = torch.load(source / "mobilenet_v2_N4_rearrange.pruned.pth", weights_only=True)
    plain = torch.load(source / "mobilenet_v2_N4_plain.masks.pth", weights_only=True)
    state = pruned["state_dict"]
    torch.save({
        "plain": pack(plain["masks"]), "plain_logits": plain["logits"],
        "plain_meta": {k: v for k, v in plain.items() if k not in ("masks", "logits")},
        "rearrange": pack({k: v for k, v in state.items() if k.endswith(".mask")}),
        "pruned_keys": list(state), "pruned_meta": {k: v for k, v in pruned.items() if k != "state_dict"},
    }, HERE / PACKED_MASKS)
    check(pruned, authors_pruned_checkpoint(HERE))
    check(plain, authors_plain_masks_of(HERE))
    print("rebuilt both files bit for bit")


def check(original, rebuilt):
    assert type(original) is type(rebuilt)
    if isinstance(original, dict):
        assert list(original) == list(rebuilt)
        for key in original:
            check(original[key], rebuilt[key])
    elif torch.is_tensor(original):
        assert original.dtype == rebuilt.dtype and original.shape == rebuilt.shape and torch.equal(original, rebuilt)
    else:
        assert original == rebuilt


if __name__ == "__main__":
    main(sys.argv[1])
