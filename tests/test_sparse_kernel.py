"""The 1xN kernel equals the masked dense conv on every MobileNet 1x1 shape, for every N; the
depthwise kernel equals PyTorch's depthwise conv on every MobileNet depthwise shape; the stem
kernel equals PyTorch's 3x3 stride-2 conv; the linear kernel equals F.linear."""
import pytest
import torch
import torch.nn.functional as F

import models
from conftest import ARCHS, layout, torch_threads
from sparse.kernel import (ACTIVATIONS, apply_activation, available_backends, conv1x1_1xn, depthwise_conv,
                           depthwise_conv_torch, linear, stem_conv)
from sparse.pack import BlockSparse1xN, pack_1xn, unpack_1xn

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


# (c_out, c_in, batch, height, width, channels_last): a channels_last input, and MobileNetV2's last
# conv (320 -> 1280 on 7x7), whose weights outweigh its input, so that 2 threads split its groups
# rather than its tiles, and whose 49-float planes the AVX2 path pads with 1 thread.
THREAD_CASES = [(96, 32, 2, 30, 30, True), (1280, 320, 1, 7, 7, False)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_layouts_and_thread_counts(case, backend):
    c_out, c_in, batch, height, width, channels_last = case
    generator = torch.Generator().manual_seed(2)
    weight, mask, bias = masked_layer(c_out, c_in, 4, 0.5, generator)
    x = torch.randn(batch, c_in, height, width, generator=generator)
    expected = masked_dense_conv(x, weight, mask, bias, "relu6")
    packed = pack_1xn(weight, 4, keep=mask)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for count in (1, 2):
        with torch_threads(count):
            got = conv1x1_1xn(x.to(memory_format=memory_format), packed, bias, "relu6", backend=backend)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


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


def depthwise_shapes(arch):
    """Distinct (C, k, stride, H, W) of the arch's depthwise convs at 224 px, H and W capped at
    20 (the kernel's cases are the row tiles and the vector tails, not the size)."""
    model = models.get_model(arch).eval()
    shapes = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: shapes.append(
        (m.in_channels, m.kernel_size[0], m.stride[0], *(min(side, 20) for side in inputs[0].shape[2:]))))
        for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return list(dict.fromkeys(shapes))


def depthwise_layer(channels, k, generator):
    weight = torch.randn(channels, 1, k, k, generator=generator) * (2.0 / k ** 2) ** 0.5
    return weight, torch.randn(channels, generator=generator) * 0.1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_depthwise_on_every_mobilenet_shape(arch, backend):
    generator = torch.Generator().manual_seed(4)
    for i, (channels, k, stride, height, width) in enumerate(depthwise_shapes(arch)):
        weight, bias = depthwise_layer(channels, k, generator)
        width -= i % 2  # odd widths too: the stride-2 deinterleave splits them unevenly
        x = torch.randn(1, channels, height, width, generator=generator) * 3
        activation = ACTIVATIONS[i % len(ACTIVATIONS)]
        got = depthwise_conv(x, weight, bias, stride, activation, backend=backend)
        torch.testing.assert_close(got, depthwise_conv_torch(x, weight, bias, stride, activation), atol=1e-4,
                                   rtol=1e-4, msg=lambda m: f"{arch} C={channels} k={k} s={stride} {height}x{width}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("k", (3, 5))
def test_depthwise_sizes_batches_layouts_and_threads(k, stride, backend):
    """Planes from 1x1 up to several vectors per row and several bands (the 112 px one), heights
    that end in a short tile of every row count below 8, batch 3, a channels_last input, 1 and 2
    threads."""
    generator = torch.Generator().manual_seed(5)
    weight, bias = depthwise_layer(6, k, generator)
    for i, (height, width) in enumerate([(1, 1), (2, 5), (9, 33), (15, 17), (30, 9), (37, 70), (112, 112)]):
        x = torch.randn(3, 6, height, width, generator=generator) * 3
        activation = ACTIVATIONS[i % len(ACTIVATIONS)]
        expected = depthwise_conv_torch(x, weight, bias, stride, activation)
        for count in (1, 2):
            with torch_threads(count):
                got = depthwise_conv(x.to(memory_format=torch.channels_last), weight, bias, stride, activation,
                                     backend=backend)
                torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=lambda m: f"{height}x{width}: {m}")


def test_depthwise_rejects_what_it_does_not_compute():
    if BACKENDS == ("torch",):
        pytest.skip("no C++ kernel here")
    x, bias = torch.zeros(1, 4, 8, 8), torch.zeros(4)
    with pytest.raises(RuntimeError, match="kernel size must be 3 or 5"):
        depthwise_conv(x, torch.zeros(4, 1, 7, 7), bias, 1, backend=BACKENDS[0])
    with pytest.raises(RuntimeError, match="stride must be 1 or 2"):
        depthwise_conv(x, torch.zeros(4, 1, 3, 3), bias, 3, backend=BACKENDS[0])
    with pytest.raises(RuntimeError, match=r"weight: float32 \(C, 1, k, k\)"):
        depthwise_conv(x, torch.zeros(8, 1, 3, 3), bias, 1, backend=BACKENDS[0])
    with pytest.raises(RuntimeError, match="empty image"):
        depthwise_conv(torch.zeros(1, 4, 0, 8), torch.zeros(4, 1, 3, 3), bias, 2, backend=BACKENDS[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_stem_conv_equals_pytorchs_conv(backend):
    """The stem kernel on 1 to 4 input channels, output channel counts that leave its last tile of
    channels partial, images from 1x1 up to several vectors per row (odd sizes split their columns
    unevenly), batch 2, a channels_last input, 1 and 2 threads."""
    generator = torch.Generator().manual_seed(6)
    cases = [(3, 32, 224, 224), (3, 16, 37, 70), (1, 13, 9, 33), (4, 20, 2, 5), (2, 7, 1, 1), (3, 5, 31, 17)]
    for i, (c_in, c_out, height, width) in enumerate(cases):
        weight = torch.randn(c_out, c_in, 3, 3, generator=generator) * 0.5
        bias = torch.randn(c_out, generator=generator) * 0.1
        x = torch.randn(2, c_in, height, width, generator=generator) * 3
        activation = ACTIVATIONS[i % len(ACTIVATIONS)]
        expected = apply_activation(F.conv2d(x, weight, bias, stride=2, padding=1), activation)
        for count in (1, 2):
            with torch_threads(count):
                got = stem_conv(x.to(memory_format=torch.channels_last), weight, bias, activation, backend=backend)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"{c_in}->{c_out} at {height}x{width}: {m}")


def test_stem_conv_rejects_what_it_does_not_compute():
    if BACKENDS == ("torch",):
        pytest.skip("no C++ kernel here")
    weight, bias = torch.zeros(8, 3, 3, 3), torch.zeros(8)
    with pytest.raises(RuntimeError, match="the stem takes 1 to 4 input channels, got 5"):
        stem_conv(torch.zeros(1, 5, 8, 8), torch.zeros(8, 5, 3, 3), bias, backend=BACKENDS[0])
    with pytest.raises(RuntimeError, match=r"stem weight must be \(C_out, 3, 3, 3\)"):
        stem_conv(torch.zeros(1, 3, 8, 8), torch.zeros(8, 3, 5, 5), bias, backend=BACKENDS[0])
    with pytest.raises(RuntimeError, match="stem bias must hold C_out"):
        stem_conv(torch.zeros(1, 3, 8, 8), weight, torch.zeros(7), backend=BACKENDS[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_equals_f_linear(backend):
    """The classifier's shapes (MobileNetV2's, V3's two layers), feature counts that end in a
    partial vector or fill none, row counts that leave the last block of rows partial, batch 1
    and 3, a non-contiguous input, 1 and 2 threads."""
    generator = torch.Generator().manual_seed(7)
    for c_in, c_out in [(1280, 1000), (960, 1280), (13, 5), (7, 1), (33, 6), (64, 4), (100, 17)]:
        weight = torch.randn(c_out, c_in, generator=generator)
        bias = torch.randn(c_out, generator=generator)
        for batch in (1, 3):
            x = torch.randn(c_in, batch, generator=generator).t()  # columns of a matrix: not contiguous
            for count in (1, 2):
                with torch_threads(count):
                    torch.testing.assert_close(linear(x, weight, bias, backend), F.linear(x, weight, bias),
                                               atol=1e-4, rtol=1e-4, msg=lambda m: f"{c_in}->{c_out}: {m}")


def test_linear_rejects_what_it_does_not_compute():
    if BACKENDS == ("torch",):
        pytest.skip("no C++ kernel here")
    weight, bias = torch.zeros(8, 16), torch.zeros(8)
    with pytest.raises(RuntimeError, match=r"linear weight must be \(C_out, 16\)"):
        linear(torch.zeros(2, 16), torch.zeros(8, 15), bias, BACKENDS[0])
    with pytest.raises(RuntimeError, match=r"linear input must be \(batch, C_in\)"):
        linear(torch.zeros(2, 16, 1), weight, bias, BACKENDS[0])
    with pytest.raises(RuntimeError, match="linear bias must hold C_out"):
        linear(torch.zeros(2, 16), weight, torch.zeros(9), BACKENDS[0])
    with pytest.raises(RuntimeError, match="weight must be a CPU Float"):
        linear(torch.zeros(2, 16), weight.double(), bias, BACKENDS[0])


def test_the_cpp_kernel_builds_where_a_compiler_is_present():
    """Otherwise every backend test above would quietly exercise only the PyTorch fallback."""
    import platform
    import shutil
    if platform.machine() in ("x86_64", "AMD64") and shutil.which("c++"):
        assert "avx2" in BACKENDS, "the 1×N C++ kernel did not build; see the warning logged by sparse.kernel"
    else:
        assert BACKENDS == ("torch",)


def malformed(kind: str):
    """A valid packed 8x6 weight (N=4), then broken one way."""
    weight = torch.arange(48, dtype=torch.float32).view(8, 6) + 1
    packed = pack_1xn(weight, 4)
    row_ptr, col_idx, values = packed.row_ptr.clone(), packed.col_idx.clone(), packed.values
    if kind == "col_idx past C_in":
        col_idx[-1] = 6
    elif kind == "negative col_idx":
        col_idx[0] = -1
    elif kind == "row_ptr decreasing":
        row_ptr[1] = 13  # [0, 13, 12]: the first group would run past the last block
    elif kind == "row_ptr past nnzb":
        row_ptr[-1] = 100
    elif kind == "row_ptr too short":
        row_ptr = row_ptr[:-1]
    elif kind == "col_idx unsorted":
        col_idx[:2] = col_idx[:2].flip(0)  # the fused block's threads split a group's blocks by column
    elif kind == "values float64":
        values = values.double()
    elif kind == "col_idx int64":
        col_idx = col_idx.long()
    return BlockSparse1xN(row_ptr, col_idx, values, 8, 6)


MALFORMED = {"col_idx past C_in": "col_idx must lie in", "negative col_idx": "col_idx must lie in",
             "row_ptr decreasing": "row_ptr must rise", "row_ptr past nnzb": "row_ptr must rise",
             "col_idx unsorted": "col_idx must increase within each row group",
             "row_ptr too short": "disagree with out_channels", "values float64": "values must be a CPU Float",
             "col_idx int64": "col_idx must be a CPU Int"}


@pytest.mark.parametrize("kind", MALFORMED)
def test_cpp_kernel_rejects_a_malformed_packed_weight(kind):
    """A corrupt .sparse.pt must raise, never read (or write) out of bounds."""
    backends = [b for b in BACKENDS if b != "torch"]
    if not backends:
        pytest.skip("no C++ kernel here")
    x = torch.randn(1, 6, 5, 5)
    for backend in backends:
        with pytest.raises(RuntimeError, match=MALFORMED[kind]):
            conv1x1_1xn(x, malformed(kind), torch.zeros(8), backend=backend)


def test_conv1x1_checks_the_input_channel_count_and_device():
    packed = pack_1xn(torch.randn(8, 6), 4)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="6 input channels"):
            conv1x1_1xn(torch.randn(1, 5, 3, 3), packed, torch.zeros(8), backend=backend)
    if BACKENDS != ("torch",):
        with pytest.raises(RuntimeError, match="bias must hold out_channels"):
            conv1x1_1xn(torch.randn(1, 6, 3, 3), packed, torch.zeros(7), backend=BACKENDS[0])
        with pytest.raises(RuntimeError, match="input must be a CPU Float"):
            conv1x1_1xn(torch.randn(1, 6, 3, 3).double(), packed, torch.zeros(8), backend=BACKENDS[0])
