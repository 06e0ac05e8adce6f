"""The 1xN kernel equals the masked dense conv on every MobileNet 1x1 shape, for every N."""
import pytest
import torch
import torch.nn.functional as F

from conftest import ARCHS, layout
from sparse.kernel import ACTIVATIONS, apply_activation, available_backends, conv1x1_1xn
from sparse.pack import pack_1xn, unpack_1xn

BLOCK_SIZES = (1, 2, 4, 8, 16, 32)
BACKENDS = available_backends()  # the C++ ISAs this CPU runs, and 'torch'


def shapes_1x1(arch):
    """Distinct (C_out, C_in) of the arch's prunable 1x1 convs, from the reference layout."""
    return sorted({tuple(m["weight_shape"][:2]) for m in layout(arch)["masked_modules"]})


def block_mask(c_out, c_in, n, rate, generator):
    """A random 1xN mask that keeps each block with probability 1 - rate; partial last blocks."""
    groups = -(-c_out // n)
    keep = torch.rand(groups, 1, c_in, generator=generator) >= rate
    return keep.expand(groups, n, c_in).reshape(groups * n, c_in)[:c_out]


def masked_layer(c_out, c_in, n, rate, generator):
    weight = torch.randn(c_out, c_in, generator=generator) * (2.0 / c_in) ** 0.5  # Kaiming scale
    mask = block_mask(c_out, c_in, n, rate, generator)
    bias = torch.randn(c_out, generator=generator) * 0.1
    return weight, mask, bias


def masked_dense_conv(x, weight, mask, bias, activation):
    return apply_activation(F.conv2d(x, (weight * mask)[:, :, None, None], bias), activation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", BLOCK_SIZES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_mobilenet_shape(arch, n, backend):
    generator = torch.Generator().manual_seed(n)
    for i, (c_out, c_in) in enumerate(shapes_1x1(arch)):
        weight, mask, bias = masked_layer(c_out, c_in, n, rate=0.5, generator=generator)
        # Spatial sizes cycle through one tile with a ragged tail, several tiles, and a GEMV.
        side = (7, 13, 1)[i % 3]
        x = torch.randn(1, c_in, side, side, generator=generator)
        activation = ACTIVATIONS[i % len(ACTIVATIONS)]
        got = conv1x1_1xn(x, pack_1xn(weight, n, keep=mask), bias, activation, backend=backend)
        torch.testing.assert_close(got, masked_dense_conv(x, weight, mask, bias, activation), atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"{arch} {c_out}x{c_in} N={n} {side}x{side}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rate", (0.0, 0.9, 1.0))
def test_activations_batches_and_extreme_rates(backend, activation, rate):
    generator = torch.Generator().manual_seed(1)
    for c_out, c_in, n, (height, width) in [(20, 24, 8, (5, 11)), (1000, 64, 32, (1, 1)), (36, 40, 4, (28, 28))]:
        weight, mask, bias = masked_layer(c_out, c_in, n, rate, generator)
        x = torch.randn(3, c_in, height, width, generator=generator) * 3  # reach relu6's and hardswish's kinks
        got = conv1x1_1xn(x, pack_1xn(weight, n, keep=mask), bias, activation, backend=backend)
        torch.testing.assert_close(got, masked_dense_conv(x, weight, mask, bias, activation), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_input_and_thread_counts(backend):
    generator = torch.Generator().manual_seed(2)
    weight, mask, bias = masked_layer(96, 32, 4, 0.5, generator)
    x = torch.randn(2, 32, 30, 30, generator=generator)
    expected = masked_dense_conv(x, weight, mask, bias, "relu")
    packed = pack_1xn(weight, 4, keep=mask)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            got = conv1x1_1xn(x.to(memory_format=torch.channels_last), packed, bias, "relu", backend=backend)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n", (3, 4, 16))
def test_pack_round_trip_and_layout(n):
    generator = torch.Generator().manual_seed(3)
    weight, mask, _ = masked_layer(37, 10, n, 0.5, generator)  # 37 % n != 0: a partial last group
    packed = pack_1xn(weight, n, keep=mask)
    assert torch.equal(unpack_1xn(packed), weight * mask)
    groups = -(-37 // n)
    assert packed.row_ptr.shape == (groups + 1,) and packed.row_ptr.dtype == torch.int32
    assert packed.values.shape == (packed.col_idx.numel(), n)
    blocks_kept = F.pad(mask, (0, 0, 0, groups * n - 37)).view(groups, n, 10).any(1)
    assert packed.col_idx.numel() == int(blocks_kept.sum())
    last_group = packed.values[packed.row_ptr[-2]:]
    assert torch.all(last_group[:, 37 - (groups - 1) * n:] == 0)  # zero padding past C_out


def test_the_cpp_kernel_builds_where_a_compiler_is_present():
    """Otherwise every backend test above would quietly exercise only the PyTorch fallback."""
    import platform
    import shutil
    if platform.machine() in ("x86_64", "AMD64") and shutil.which("c++"):
        assert "avx2" in BACKENDS, "the 1×N C++ kernel did not build; see the warning logged by sparse.kernel"
    else:
        assert BACKENDS == ("torch",)
