"""The 1×N mask math on its own: exact counts, block structure, partial blocks, seeded randomness."""
import pytest
import torch

from utils.pruning import (block_l1_mask, block_random_mask, filter_l1_mask, filter_order, num_pruned,
                           weight_magnitude_mask)


def block_view(mask, N):
    """(C_out, C_in, ...) bool mask → per-block kept flags for full blocks, asserting uniformity."""
    c_out, c_in = mask.shape[:2]
    per_channel = mask.reshape(c_out, c_in, -1)
    assert (per_channel.all(-1) == per_channel.any(-1)).all(), "a kernel is partly pruned"
    return per_channel[..., 0]


def assert_blocks_uniform(mask, N):
    channels = block_view(mask, N)                      # (C_out, C_in)
    for start in range(0, channels.shape[0], N):
        block = channels[start:start + N]               # a full or the partial last block
        assert (block.all(0) == block.any(0)).all(), f"block at rows {start}.. is mixed"


@pytest.mark.parametrize("shape,N", [((16, 8, 1, 1), 4), ((24, 5, 1, 1), 8), ((10, 3, 3, 3), 4),
                                     ((7, 4, 1, 1), 4), ((5, 6, 1, 1), 16), ((8, 8, 1, 1), 1)])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.9])
def test_block_l1_prunes_exact_count_of_whole_blocks(shape, N, rate):
    weight = torch.randn(shape)
    mask = block_l1_mask(weight, N, rate)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    assert_blocks_uniform(mask, N)
    groups = -(-shape[0] // N)
    blocks = block_view(mask, N).float()
    pruned_blocks = sum(int((~blocks[s:s + N].bool().any(0)).sum()) for s in range(0, shape[0], N))
    assert pruned_blocks == num_pruned(groups * shape[1], rate)


def test_block_l1_prunes_the_lowest_blocks():
    weight = torch.ones(4, 3, 1, 1)
    weight[0:2, 1] = 0.01                              # the block (rows 0-1, input 1) is the weakest
    mask = block_l1_mask(weight, 2, 1 / 6)
    assert not mask[0:2, 1].any() and mask.sum() == 10


def test_partial_last_block_never_wraps_into_next_input_channel():
    # C_out = 6, N = 4: blocks are rows 0-3 and the partial rows 4-5 of each input channel.
    weight = torch.ones(6, 2, 1, 1)
    weight[4:6, 0] = 1e-3                              # the partial block of input 0 is the weakest
    mask = block_l1_mask(weight, 4, 0.25)[..., 0, 0]   # 4 blocks → 1 pruned
    assert not mask[4:6, 0].any()
    assert mask[:4].all() and mask[:, 1].all()


def test_rearranged_blocks_follow_the_l1_order_and_map_back():
    weight = torch.randn(8, 4, 1, 1)
    order = filter_order(weight)
    mask = block_l1_mask(weight, 4, 0.5, order=order)
    assert torch.equal(mask[order], block_l1_mask(weight[order], 4, 0.5))
    assert_blocks_uniform(mask[order], 4)


def test_random_blocks_are_seeded_exact_and_uniform():
    shape = (12, 10, 1, 1)
    first = block_random_mask(shape, 4, 0.5, torch.Generator().manual_seed(1))
    again = block_random_mask(shape, 4, 0.5, torch.Generator().manual_seed(1))
    other = block_random_mask(shape, 4, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert_blocks_uniform(first, 4)
    assert int((~first).sum()) == 4 * num_pruned(3 * 10, 0.5)   # exactly 15 blocks of 4, no replacement


def test_weight_and_filter_baselines():
    weight = torch.randn(10, 6, 1, 1)
    unstructured = weight_magnitude_mask(weight, 0.5)
    assert int((~unstructured).sum()) == 30
    assert weight.abs()[~unstructured].max() <= weight.abs()[unstructured].min()
    filters = filter_l1_mask(weight, 0.3)
    kept_rows = filters.flatten(1).all(1)
    assert int((~kept_rows).sum()) == 3 and (filters.flatten(1).any(1) == kept_rows).all()
