"""Property tests of the mask math: any shape, N and rate."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.pruning import block_l1_mask, block_random_mask, num_pruned, weight_magnitude_mask

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
    scores = block_scores(weight, N)
    if (~blocks).any() and blocks.any():                                     # the lowest blocks go
        assert scores[~blocks].max() <= scores[blocks].min()


def block_scores(weight, N):
    """(C_in, G) ℓ1 norm of each block, written independently of the code under test: block g of
    input channel i is output channels gN..gN+N-1 (the last one partial, scored by its own sum)."""
    c_out, c_in = weight.shape[:2]
    return torch.tensor([[weight[start:start + N, i].abs().sum().item() for start in range(0, c_out, N)]
                         for i in range(c_in)], dtype=weight.dtype)


def test_equal_scores_are_pruned_in_index_order():
    """A stable sort: ties go the same way on every device (unstable CPU and CUDA sorts differ)."""
    weight = (torch.arange(300) % 3).float().view(300, 1, 1, 1)   # magnitudes 0, 1, 2, 0, 1, 2, ...
    keep = weight_magnitude_mask(weight, 0.5).flatten()
    pruned = (~keep).nonzero().flatten().tolist()
    assert pruned == sorted(list(range(0, 300, 3)) + list(range(1, 150, 3)))


@settings(max_examples=150, deadline=None)
@given(shapes, block_sizes, rates, st.integers(0, 2**31 - 1))
def test_block_random_mask_properties(shape, N, rate, seed):
    c_out, c_in, k = shape
    mask = block_random_mask((c_out, c_in, k, k), N, rate, torch.Generator().manual_seed(seed))
    blocks = kept_blocks(mask, N)
    assert int((~blocks).sum()) == num_pruned(blocks.numel(), rate)
    assert torch.equal(block_random_mask((c_out, c_in, k, k), N, rate, torch.Generator().manual_seed(seed)), mask)
