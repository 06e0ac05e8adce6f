"""Property tests of the mask math: any shape, N and rate."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.pruning import block_l1_mask, block_random_mask, num_pruned

shapes = st.tuples(st.integers(1, 40), st.integers(1, 12), st.sampled_from([1, 3]))
rates = st.floats(0.0, 0.99)
block_sizes = st.sampled_from([1, 2, 3, 4, 8, 16, 32])


def kept_blocks(mask, N):
    """(C_in, G) kept flags; asserts every block (partial last one included) is all kept or all pruned."""
    c_out, c_in = mask.shape[:2]
    channels = mask.reshape(c_out, c_in, -1)
    assert (channels.all(-1) == channels.any(-1)).all()
    flags = []
    for start in range(0, c_out, N):           # blocks never cross into another input channel
        block = channels[start:start + N, :, 0]
        assert (block.all(0) == block.any(0)).all()
        flags.append(block[0])
    return torch.stack(flags, dim=1)


@settings(max_examples=150, deadline=None)
@given(shapes, block_sizes, rates, st.integers(0, 2**31 - 1))
def test_block_l1_mask_properties(shape, N, rate, seed):
    c_out, c_in, k = shape
    weight = torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(seed))
    mask = block_l1_mask(weight, N, rate)
    blocks = kept_blocks(mask, N)
    assert int((~blocks).sum()) == num_pruned(blocks.numel(), rate)
    assert torch.equal(block_l1_mask(weight, N, rate), mask)                 # deterministic
    assert torch.equal(block_l1_mask(weight * mask, N, rate), mask)          # idempotent on its own output


@settings(max_examples=150, deadline=None)
@given(shapes, block_sizes, rates, st.integers(0, 2**31 - 1))
def test_block_random_mask_properties(shape, N, rate, seed):
    c_out, c_in, k = shape
    mask = block_random_mask((c_out, c_in, k, k), N, rate, torch.Generator().manual_seed(seed))
    blocks = kept_blocks(mask, N)
    assert int((~blocks).sum()) == num_pruned(blocks.numel(), rate)
    assert torch.equal(block_random_mask((c_out, c_in, k, k), N, rate, torch.Generator().manual_seed(seed)), mask)
