"""Packing a 1x1 conv weight into 1xN blocks: BSR with (N, 1) blocks of the C_out x C_in matrix.

A block is N consecutive output channels x one input channel. Row group g holds output
channels [g*N, g*N + N); when C_out % N != 0 the last group is partial (C_out mod N rows) and
its values are zero-padded to N rows, so every block stores exactly N weights.
"""
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockSparse1xN:
    row_ptr: Tensor  # (groups + 1,) int32: blocks of group g are row_ptr[g] .. row_ptr[g+1]-1
    col_idx: Tensor  # (nnzb,) int32: input channel of each block, increasing within a group
    values: Tensor  # (nnzb, N) float32: the N weights of each block
    out_channels: int
    in_channels: int

    @property
    def n(self) -> int:
        return self.values.shape[1]

    @property
    def density(self) -> float:
        """Fraction of blocks kept."""
        groups = self.row_ptr.numel() - 1
        return self.col_idx.numel() / max(groups * self.in_channels, 1)

    def tensors(self) -> dict[str, Tensor]:
        return {"row_ptr": self.row_ptr, "col_idx": self.col_idx, "values": self.values}


def pack_1xn(weight: Tensor, n: int, keep: Tensor | None = None) -> BlockSparse1xN:
    """Packs the blocks of `weight` (C_out, C_in[, 1, 1]) that hold any kept weight.

    keep: the mask (same shape as weight); by default the nonzero weights. Weights outside the
    mask are stored as zeros, so packing never changes what the layer computes.
    """
    out_channels, in_channels = weight.shape[:2]
    w = weight.detach().reshape(out_channels, in_channels).float()
    kept = (w != 0) if keep is None else keep.detach().reshape(out_channels, in_channels).bool()
    groups = -(-out_channels // n)
    pad = groups * n - out_channels
    w = torch.nn.functional.pad(w * kept, (0, 0, 0, pad)).view(groups, n, in_channels)
    kept = torch.nn.functional.pad(kept, (0, 0, 0, pad)).view(groups, n, in_channels)

    block_kept = kept.any(dim=1)  # (groups, C_in)
    group_of_block, col_idx = block_kept.nonzero(as_tuple=True)  # row-major: by group, then column
    row_ptr = torch.zeros(groups + 1, dtype=torch.int64)
    row_ptr[1:] = block_kept.sum(dim=1).cumsum(0)
    values = w[group_of_block, :, col_idx]  # (nnzb, N)
    return BlockSparse1xN(row_ptr.int(), col_idx.int(), values.contiguous(), out_channels, in_channels)


def unpack_1xn(packed: BlockSparse1xN) -> Tensor:
    """The dense (C_out, C_in) matrix."""
    groups = packed.row_ptr.numel() - 1
    dense = torch.zeros(groups, packed.n, packed.in_channels, dtype=packed.values.dtype)
    group_of_block = torch.repeat_interleave(
        torch.arange(groups), (packed.row_ptr[1:] - packed.row_ptr[:-1]).long())
    dense[group_of_block, :, packed.col_idx.long()] = packed.values
    return dense.reshape(groups * packed.n, packed.in_channels)[: packed.out_channels]


def check_1xn(packed: BlockSparse1xN) -> None:
    """Raises ValueError unless `packed` is BSR that addresses only its layer's channels: what the C++
    kernel checks on every call (check_bsr), checked once where a file is read, so that a corrupt or
    hostile file is refused with a message instead of reaching a kernel (whose error path some torch
    builds do not survive: seen with torch 2.11 on a GPU machine)."""
    row_ptr, col_idx, values = packed.row_ptr, packed.col_idx, packed.values
    if row_ptr.dtype != torch.int32 or col_idx.dtype != torch.int32 or values.dtype != torch.float32:
        raise ValueError("row_ptr and col_idx must be int32 and values float32")
    if values.dim() != 2 or values.shape[1] < 1:
        raise ValueError(f"values must be (blocks, N), got {tuple(values.shape)}")
    groups = -(-packed.out_channels // values.shape[1])
    if row_ptr.shape != (groups + 1,) or col_idx.shape != (values.shape[0],):
        raise ValueError(f"row_ptr {tuple(row_ptr.shape)}, col_idx {tuple(col_idx.shape)} and values "
                         f"{tuple(values.shape)} do not fit {packed.out_channels} output channels")
    starts = row_ptr.long()
    if starts[0] != 0 or starts[-1] != col_idx.numel() or (starts.diff() < 0).any():
        raise ValueError(f"row_ptr must rise from 0 to the number of blocks ({col_idx.numel()})")
    if col_idx.numel() and (col_idx.min() < 0 or col_idx.max() >= packed.in_channels):
        raise ValueError(f"col_idx must lie in [0, {packed.in_channels})")
    # Columns increase within a group: a block may be at or below the one before only where a group starts.
    group_start = torch.zeros(col_idx.numel(), dtype=torch.bool)
    group_start[starts[:-1][starts[:-1] < col_idx.numel()]] = True
    if not (group_start[1:] | (col_idx[1:] > col_idx[:-1])).all():
        raise ValueError("col_idx must increase within each row group")
