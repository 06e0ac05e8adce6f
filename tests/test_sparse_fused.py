"""The fused inverted residual block (one op for expand, depthwise and project, band by band)
equals the same three layers run one after the other, on every ISA here, and the sparse V2
network uses it."""
import pytest
import torch

from conftest import torch_threads
from sparse.kernel import (available_backends, conv1x1_1xn, depthwise_conv, inverted_residual,
                           inverted_residual_torch, stem_block, stem_block_torch, stem_conv)
from sparse.model import FusedInvertedResidual, FusedStemBlock, set_backend, set_fusion, to_sparse_model
from sparse.pack import pack_1xn
from test_sparse_kernel import masked_layer
from test_sparse_model import pruned_model

BACKENDS = available_backends()
CPP_BACKENDS = [b for b in BACKENDS if b != "torch"]

# (c_in, hidden, c_out, stride, residual, height, width, kernel, n_expand, n_project). The hidden
# widths of 384 make the op cut the image into several bands (its band budget is 128 Ki floats),
# so rows shared by two bands come from the ring; the small ones fit one band. On the AVX2 path
# the projection reads 192 hidden channels per pass: 600 makes four passes alone and two per
# thread of a team of 2 or 3, the last one short.
BLOCKS = [
    (24, 384, 24, 1, True, 37, 29, 3, 4, 4),     # 6 bands, residual
    (24, 384, 32, 2, False, 41, 23, 3, 4, 16),   # 3 bands, stride 2, partial project groups (32 = 2 x 16)
    (16, 384, 16, 1, True, 31, 17, 5, 8, 4),     # 5x5 filter, 3 bands
    (16, 600, 16, 1, True, 9, 7, 3, 4, 4),       # projection passes (AVX2), residual
    (16, 96, 24, 2, False, 15, 9, 3, 4, 4),      # odd sizes, one band
    (16, 96, 16, 1, False, 13, 13, 3, 4, 8),     # stride 1 without residual
    (8, 48, 8, 1, True, 1, 1, 3, 4, 4),          # a single pixel
    (8, 48, 12, 2, False, 2, 3, 3, 4, 8),        # partial project group (12 = 8 + 4)
]


def random_block(c_in, hidden, c_out, kernel, n_expand, n_project, rate, generator):
    expand_w, expand_mask, expand_bias = masked_layer(hidden, c_in, n_expand, rate, generator)
    project_w, project_mask, project_bias = masked_layer(c_out, hidden, n_project, rate, generator)
    dw_weight = torch.randn(hidden, 1, kernel, kernel, generator=generator) * 0.5
    dw_bias = torch.randn(hidden, generator=generator) * 0.1
    return (pack_1xn(expand_w, n_expand, keep=expand_mask), expand_bias, dw_weight, dw_bias,
            pack_1xn(project_w, n_project, keep=project_mask), project_bias)


def layer_by_layer(x, expand, expand_bias, dw_weight, dw_bias, stride, project, project_bias, residual, backend):
    """The unfused path: the three layers' own ops in turn."""
    hidden = conv1x1_1xn(x, expand, expand_bias, "relu6", backend=backend)
    y = conv1x1_1xn(depthwise_conv(hidden, dw_weight, dw_bias, stride, "relu6", backend=backend), project,
                    project_bias, backend=backend)
    return x + y if residual else y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: "x".join(map(str, b)))
def test_fused_block_equals_the_layers_in_turn(block, backend):
    c_in, hidden, c_out, stride, residual, height, width, kernel, n_expand, n_project = block
    generator = torch.Generator().manual_seed(height * width)
    layers = random_block(c_in, hidden, c_out, kernel, n_expand, n_project, 0.5, generator)
    expand, expand_bias, dw_weight, dw_bias, project, project_bias = layers
    args = (expand, expand_bias, dw_weight, dw_bias, stride, project, project_bias, residual)
    # Fewer images than threads: the threads split each image's rows (14 output rows or more:
    # the first three blocks) or compute it together (channel shares, a barrier per band: the
    # others); else each thread takes whole images.
    for batch, count in ((1, 1), (2, 1), (1, 2), (1, 3), (2, 3), (3, 2)):
        with torch_threads(count):
            x = torch.randn(batch, c_in, height, width, generator=generator)
            expected = layer_by_layer(x, *args, backend=backend)
            got = inverted_residual(x, *args, backend=backend)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"batch {batch}, {count} thread(s): {m}")
            torch.testing.assert_close(got, inverted_residual_torch(x, *args), atol=1e-4, rtol=1e-4)


def test_fused_block_checks_its_input():
    if not CPP_BACKENDS:
        pytest.skip("no C++ kernel here")
    generator = torch.Generator().manual_seed(0)
    expand, expand_bias, dw_weight, dw_bias, project, project_bias = random_block(8, 48, 8, 3, 4, 4, 0.5, generator)
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(ValueError, match="8 input channels"):
        inverted_residual(torch.randn(1, 7, 6, 6), expand, expand_bias, dw_weight, dw_bias, 1, project,
                          project_bias, True, CPP_BACKENDS[0])
    with pytest.raises(RuntimeError, match="residual block needs stride 1"):
        torch.ops.conv1xn.inverted_residual(x, expand.row_ptr, expand.col_idx, expand.values, expand_bias, dw_weight,
                                            dw_bias, 2, project.row_ptr, project.col_idx, project.values,
                                            project_bias, 8, True, CPP_BACKENDS[0])
    bad_col_idx = project.col_idx.clone()
    bad_col_idx[0] = 48  # past the hidden channels
    with pytest.raises(RuntimeError, match="project col_idx must lie in"):
        torch.ops.conv1xn.inverted_residual(x, expand.row_ptr, expand.col_idx, expand.values, expand_bias, dw_weight,
                                            dw_bias, 1, project.row_ptr, bad_col_idx, project.values, project_bias,
                                            8, True, CPP_BACKENDS[0])
    with pytest.raises(RuntimeError, match="depthwise weight must be"):
        torch.ops.conv1xn.inverted_residual(x, expand.row_ptr, expand.col_idx, expand.values, expand_bias,
                                            dw_weight[:40], dw_bias, 1, project.row_ptr, project.col_idx,
                                            project.values, project_bias, 8, True, CPP_BACKENDS[0])


def test_sparse_v2_runs_its_blocks_fused_and_unfused_alike():
    model = pruned_model("mobilenet_v2", 4)
    sparse = to_sparse_model(model, 4)
    fused = [m for m in sparse.modules() if isinstance(m, FusedInvertedResidual)]
    assert len(fused) == 16  # every block but the first, which has no expand conv
    assert sum(m.use_residual for m in fused) == 10
    # The block keeps its layers under `conv`: the state_dict keys of a .sparse.pt do not change.
    assert all(key.startswith("conv.") for block in fused for key in block.state_dict())
    x = torch.randn(1, 3, 45, 45)  # odd sizes at every stage (45, 23, 12, 6, 3)
    with torch.no_grad():
        expected = model(x)
        for backend in BACKENDS:
            set_backend(sparse, backend)
            for enabled in (True, False):
                set_fusion(sparse, enabled)
                assert all(block.fused == enabled and block.backend == backend for block in fused)
                torch.testing.assert_close(sparse(x), expected, atol=1e-4, rtol=1e-4,
                                           msg=lambda m: f"{backend}, fused={enabled}: {m}")


def test_blocks_with_an_unpruned_1x1_conv_stay_unfused():
    model = pruned_model("mobilenet_v2", 4)
    pruned = [name for name, m in model.named_modules() if getattr(m, "mask", None) is not None]
    layers = [name for name in pruned if name != "features.2.conv.0"]  # block 2's expand stays dense
    sparse = to_sparse_model(model, 4, layers)
    assert not isinstance(sparse.features[2], FusedInvertedResidual)
    assert isinstance(sparse.features[3], FusedInvertedResidual)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-4, rtol=1e-4)


# (c_in, hidden, c_out, stride, height, width, n_project) of the image and the block: V2's first
# block at 224 px (several bands), odd sizes whose stem output ends in a partial vector, a
# hidden width that leaves the stem's last tile of channels partial, one pixel.
STEM_BLOCKS = [(3, 32, 16, 1, 224, 224, 4), (3, 32, 16, 1, 37, 51, 4), (1, 13, 8, 1, 9, 9, 4),
               (4, 40, 24, 2, 64, 33, 8), (3, 32, 16, 1, 1, 1, 4)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", STEM_BLOCKS, ids=lambda b: "x".join(map(str, b)))
def test_fused_stem_block_equals_the_layers_in_turn(block, backend):
    c_in, hidden, c_out, stride, height, width, n_project = block
    generator = torch.Generator().manual_seed(height + width)
    project_w, project_mask, project_bias = masked_layer(c_out, hidden, n_project, 0.5, generator)
    project = pack_1xn(project_w, n_project, keep=project_mask)
    stem_w = torch.randn(hidden, c_in, 3, 3, generator=generator) * 0.5
    stem_b = torch.randn(hidden, generator=generator) * 0.1
    dw_weight = torch.randn(hidden, 1, 3, 3, generator=generator) * 0.5
    dw_bias = torch.randn(hidden, generator=generator) * 0.1
    for batch, count in ((1, 1), (1, 2), (2, 1), (3, 2)):
        with torch_threads(count):
            x = torch.randn(batch, c_in, height, width, generator=generator)
            hidden_out = depthwise_conv(stem_conv(x, stem_w, stem_b, "relu6", backend=backend), dw_weight, dw_bias,
                                        stride, "relu6", backend=backend)
            expected = conv1x1_1xn(hidden_out, project, project_bias, backend=backend)
            got = stem_block(x, stem_w, stem_b, dw_weight, dw_bias, stride, project, project_bias, backend=backend)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"batch {batch}, {count} thread(s): {m}")
            torch.testing.assert_close(got, stem_block_torch(x, stem_w, stem_b, dw_weight, dw_bias, stride, project,
                                                             project_bias), atol=1e-4, rtol=1e-4)


def test_sparse_v2_fuses_its_stem_into_the_first_block_and_keeps_the_state_dict():
    model = pruned_model("mobilenet_v2", 4)
    sparse = to_sparse_model(model, 4)
    assert isinstance(sparse.features[1], FusedStemBlock) and sparse.features[0][0].passthrough
    unfused = to_sparse_model(model, 4)
    set_fusion(unfused, False)
    assert not unfused.features[0][0].passthrough
    assert sparse.state_dict().keys() == unfused.state_dict().keys()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(sparse(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(unfused(x), expected, atol=1e-4, rtol=1e-4)
