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
