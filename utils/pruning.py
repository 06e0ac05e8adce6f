"""The 1×N block pattern and its baselines: pure mask functions, and the masked conv layers.

A 1×N block is N consecutive output channels × one input channel × the whole kernel; in the
C_out × C_in matrix of a 1×1 conv it is an (N, 1) column segment. Every mask function returns
a bool tensor of the weight's shape, True = kept.
"""
import torch
import torch.nn.functional as F
from torch import nn


def num_pruned(count, rate):
    """floor(count · rate), computed as the authors do (a float product, then int)."""
    return int(count * rate)


def _prune_lowest(scores, rate):
    """Keep-mask over `scores` (any shape) that drops the floor(numel·rate) lowest entries."""
    flat = scores.flatten()
    keep = torch.ones_like(flat, dtype=torch.bool)
    count = num_pruned(flat.numel(), rate)
    if count:  # rate 0 (the classifier without --full) needs no sort
        # Stable: equal scores are pruned in index order on every device (CPU and CUDA sorts break ties differently).
        keep[torch.argsort(flat, stable=True)[:count]] = False
    return keep.view_as(scores)


def _blocks(weight, N):
    """(C_out, C_in, kh, kw) → (C_in, G, N·kh·kw) with G = ceil(C_out / N).

    When C_out % N != 0 the output channels are zero-padded up to G·N, so the last block of
    each input channel is a partial block of C_out mod N real channels that never wraps into
    the next input channel (the authors' reshape wraps). Where C_out % N == 0 the element
    order equals theirs, so the ℓ1 sums below are bit-identical to theirs.
    """
    c_out, c_in = weight.shape[:2]
    groups = -(-c_out // N)
    padded = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, groups * N - c_out))  # pad dim 0 at the end
    return padded.transpose(0, 1).reshape(c_in, groups, -1)


def _expand_blocks(keep, N, c_out):
    """(C_in, G) block keep-mask → (C_out, C_in) channel keep-mask."""
    return keep.t().repeat_interleave(N, dim=0)[:c_out]


def filter_order(weight):
    """Output channels sorted by ascending ℓ1 norm: the authors' filter rearrangement order."""
    return torch.argsort(weight.abs().flatten(1).sum(1))


def block_l1_mask(weight, N, rate, order=None):
    """Prune the floor(#blocks·rate) 1×N blocks of lowest ℓ1 norm.

    With `order` (a permutation of the output channels) the blocks are formed over the
    channels in that order and the mask is mapped back to the original order.
    """
    w = weight if order is None else weight[order]                 # (C_out, C_in, kh, kw)
    scores = _blocks(w, N).abs().sum(-1)                           # (C_in, G)
    keep = _expand_blocks(_prune_lowest(scores, rate), N, w.shape[0])  # (C_out, C_in)
    if order is not None:
        keep = keep[torch.argsort(order)]
    return keep[:, :, None, None].expand(weight.shape).clone()


def block_random_mask(shape, N, rate, generator=None):
    """Prune exactly floor(#blocks·rate) 1×N blocks drawn uniformly without replacement."""
    c_out, c_in = shape[:2]
    groups = -(-c_out // N)
    keep = torch.ones(c_in * groups, dtype=torch.bool)
    keep[torch.randperm(c_in * groups, generator=generator)[:num_pruned(c_in * groups, rate)]] = False
    keep = _expand_blocks(keep.view(c_in, groups), N, c_out)
    return keep[:, :, None, None].expand(shape).clone()


def weight_magnitude_mask(weight, rate):
    """Unstructured pruning: drop the floor(numel·rate) weights of lowest magnitude."""
    return _prune_lowest(weight.abs(), rate)


def filter_l1_mask(weight, rate):
    """Filter pruning: drop the floor(C_out·rate) output channels of lowest ℓ1 norm."""
    keep = _prune_lowest(weight.abs().flatten(1).sum(1), rate)     # (C_out,)
    return keep[:, None, None, None].expand(weight.shape).clone()


class MaskedConv2d(nn.Conv2d):
    """A conv whose forward uses mask ⊙ weight; subclasses decide how the mask is computed.

    The mask is a buffer (`<module>.mask` in the state_dict, float as in the authors'
    checkpoints). After `prune` the pruned weights are also zero in storage; since the
    forward multiplies by the mask they get zero gradients, so neither SGD's weight decay
    (decay of 0 is 0) nor momentum can move them.
    """

    # True where `compute_mask` forms its blocks over the `order` it is given, so that physically
    # permuting the filters by that order makes the blocks contiguous (utils/rearrange.py).
    uses_order = False
    # True where the mask is made of 1×N blocks (so --N matters).
    forms_blocks = False

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, groups=1, bias=True):
        # bias=True for the MobileNets' pointwise convs (zero, as the authors'); ResNet's convs have none.
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.register_buffer("mask", torch.ones_like(self.weight))

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def compute_mask(self, rate, N, order=None, generator=None):
        raise NotImplementedError

    @torch.no_grad()
    def prune(self, rate, N, order=None, generator=None):
        """Fix the mask once, zero the pruned weights, and freeze the bias (as the authors do)."""
        self.mask.copy_(self.compute_mask(rate, N, order=order, generator=generator))
        self.weight.mul_(self.mask)
        if self.bias is not None:  # (the authors' code crashes here on bias-free convs)
            self.bias.requires_grad_(False)

    def extra_repr(self):
        return f"{super().extra_repr()}, kept={self.mask.mean().item():.3f}"


class BlockL1Conv(MaskedConv2d):
    """1×N blocks ranked by ℓ1 norm (the paper's method)."""

    uses_order = True
    forms_blocks = True

    def compute_mask(self, rate, N, order=None, generator=None):
        return block_l1_mask(self.weight, N, rate, order)


class BlockRandomConv(MaskedConv2d):
    """1×N blocks chosen at random (the paper's ablation); seeded through `generator`."""

    forms_blocks = True

    def compute_mask(self, rate, N, order=None, generator=None):
        return block_random_mask(self.weight.shape, N, rate, generator)


class UnstructureConv(MaskedConv2d):
    """Weight pruning baseline (single weights by magnitude); N and the order do not apply."""

    def compute_mask(self, rate, N, order=None, generator=None):
        return weight_magnitude_mask(self.weight, rate)


class StructureConv(MaskedConv2d):
    """Filter pruning baseline (whole output channels by ℓ1 norm); N and the order do not apply."""

    def compute_mask(self, rate, N, order=None, generator=None):
        return filter_l1_mask(self.weight, rate)


class DenseConv(MaskedConv2d):
    """No pruning: the mask stays all ones (the dense baseline, same layout as the others)."""

    def compute_mask(self, rate, N, order=None, generator=None):
        return torch.ones_like(self.mask, dtype=torch.bool)


CONV_TYPES = {cls.__name__: cls for cls in
              (BlockL1Conv, BlockRandomConv, UnstructureConv, StructureConv, DenseConv)}


def masked_convs(model):
    """(name, module) of every prunable conv, in `named_modules` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedConv2d)]


def is_classifier(name):
    """The convs of the classifier head (MobileNets' `classifier.*`, ResNets' `fc`) get rate 0
    unless `--full` (SPEC §2; the authors' ResNet rate table prunes `fc` anyway, see README)."""
    return name.startswith("classifier.") or name == "fc"


def widest_pruned_layer(model, full=False):
    """Most output channels of a conv that `prune_model` prunes with 1×N blocks (0 if none)."""
    return max((conv.out_channels for name, conv in masked_convs(model)
                if conv.forms_blocks and (full or not is_classifier(name))), default=0)


def prune_model(model, rate, N, full=False, orders=None, generator=None):
    """One-shot pruning of every masked conv at the same per-layer rate.

    `orders` maps a conv's name to the output-channel order its blocks are formed over
    (filter rearrangement); layers not in it use their natural order.
    """
    orders = orders or {}
    for name, conv in masked_convs(model):
        layer_rate = rate if full or not is_classifier(name) else 0.0
        conv.prune(layer_rate, N, order=orders.get(name), generator=generator)
