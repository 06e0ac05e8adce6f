"""Filter rearrangement done for real: a function-preserving permutation of output channels.

The authors' `--rearrange` sorts a layer's filters by ℓ1 norm, forms the 1×N blocks over that
sorted order and maps the mask back to the original order: the function is that of a network
whose filters were sorted, but no weight moves, so the pruned blocks stay scattered in memory.
We compute the same masks (`prune_model(..., orders=rearrangement_orders(model))`) and then
move the weights (`apply_permutations_`): each rearranged conv's output channels are put in
the sorted order, together with everything downstream that is indexed by those channels, up
to the input channels of the next convs. The network computes the same function (up to float
rounding in the next convs' sums), and every rearranged layer's kept blocks are now N
consecutive rows of its weight (BSR (N, 1)).

Which layers are rearranged is read off the traced graph (`channel_chains`), not from names:
follow a conv's output channels forward through per-channel ops (BatchNorm, elementwise
activations, dropout, depthwise convs, squeeze-excite, pooling) until they reach the input of
the next convs. A conv is rearranged when every path does end at a conv input that way (no
residual add, concatenation or model output shares its channels) and passes a depthwise conv
or the global pooling on the way: V1's pointwise convs, V2/V3's expansion convs and the last
feature conv (V2 `features.18.0`, V3 `conv.0`). Projection convs fail (they feed the residual
stream, or, where a block has no shortcut, reach the next conv without a depthwise conv in
between, and the authors leave them alone); SE convs are inside the SE module, which is one
per-channel op of the graph; V3 `classifier.0` reaches `classifier.3` directly. The authors'
walk also marks the logits conv of V1 and V3 (not V2): we reproduce that in the orders (it
changes its mask only with `--full`) but never move it, which would reorder the classes.

ResNets (models with prunable k×k convs) follow the authors' other rule, "every masked conv whose
name does not end in conv3", read off the same chains: every masked conv except the 1×1 conv that
closes a bottleneck's residual branch. Of these, only the convs with private chains (a
bottleneck's conv1 and conv2, a basic block's conv1) are moved; downsample.0 and a basic block's
conv2 feed the residual sum, and fc gives the classes: they get the sorted-order mask only.

Call these on the bare model (before DDP wrapping) and before the optimizer holds state.
"""
import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.blocks import HardSigmoid, HardSwish, SqueezeExcite
from utils.pruning import MaskedConv2d, filter_order

# Modules that act on each channel on its own and hold no channel-indexed tensors.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, HardSwish, HardSigmoid,
               nn.Identity, nn.Dropout)


@dataclass
class ChannelChain:
    """Where the output channels of one conv go, as far as the input channels of the next convs.

    `followers`: per-channel modules on the way (BN, depthwise conv, SE, activations), in graph
    order; `consumers`: the convs that read these channels as input channels. `private`: every
    path ends at a consumer (no residual add, model output, ...), so the channels can be
    permuted without touching any other layer's output. `to_output`: the channels are the
    model's output (the logits conv).
    """
    conv: str
    followers: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    through_depthwise_or_pool: bool = False
    private: bool = True
    to_output: bool = False


class _Tracer(fx.Tracer):
    """Keeps every module without submodules, and SE, as one node: the graph is then a chain
    of layers with residual adds, and SE is one per-channel op (gate ⊙ x, channel for channel)."""

    def is_leaf_module(self, m, qualified_name):
        return isinstance(m, SqueezeExcite) or not any(m.children()) or super().is_leaf_module(m, qualified_name)


def is_depthwise(module):
    return (isinstance(module, nn.Conv2d) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def _is_pool(node, modules):
    if node.op == "call_function":
        return node.target is F.adaptive_avg_pool2d
    return node.op == "call_module" and isinstance(modules[node.target], nn.AdaptiveAvgPool2d)


def _follow(node, modules):
    """The ChannelChain of the conv at graph node `node` (breadth-first over its users)."""
    chain = ChannelChain(node.target)
    frontier, seen = list(node.users), set()
    while frontier:
        user = frontier.pop(0)
        if user in seen:
            continue
        seen.add(user)
        module = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            chain.consumers.append(user.target)          # stop: the channels become input channels
            continue
        if is_depthwise(module) or _is_pool(user, modules):
            chain.through_depthwise_or_pool = True
        elif user.op == "output":
            chain.to_output, chain.private = True, False
            continue
        elif not (isinstance(module, (_BatchNorm, SqueezeExcite) + ELEMENTWISE)
                  or (user.op == "call_method" and user.target == "flatten")):
            # A residual add (the channels mix with another layer's), a grouped conv, or an op we
            # don't know to be per-channel (functional activations included): not rearrangeable.
            chain.private = False
            continue
        if module is not None:
            chain.followers.append(user.target)
        frontier.extend(user.users)
    return chain


def channel_chains(model):
    """{name: ChannelChain} of every masked conv in the traced graph, in forward order.

    The SE convs are inside the SE node and have no chain of their own: they are never
    rearranged, only permuted along with the layer whose channels the SE gates.
    """
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    return {node.target: _follow(node, modules) for node in graph.nodes
            if node.op == "call_module" and isinstance(modules[node.target], MaskedConv2d)}


def _authors_logits_quirk(chains, rearranged):
    """Whether the authors' walk also "rearranges" the logits conv (mask only, no effect without
    `--full`). Their walk marks every masked conv of a plain chain (V1), and otherwise alternates
    along the non-SE convs: a conv is marked iff the one before it is not. By the rule above that
    alternation holds for every feature conv; at the logits it means: marked iff the conv that
    feeds it is not (V3 `classifier.3` after `classifier.0`; not V2 `classifier.1` after
    `features.18.0`). There is no structural reason behind it; we keep it to get their masks.
    """
    plain_chain = all(name in rearranged for name, chain in chains.items() if not chain.to_output)
    feeds = {consumer: name for name, chain in chains.items() for consumer in chain.consumers}
    return [name for name, chain in chains.items()
            if chain.to_output and (plain_chain or feeds.get(name) not in rearranged)]


def _closes_residual_branch(name, chain, chains, modules):
    """A 1×1 conv fed by another masked conv whose output joins a residual add: a bottleneck's
    `conv3` (not a `downsample.0`, fed by the residual stream; not a BasicBlock's 3×3 `conv2`)."""
    fed_by_conv = any(name in other.consumers for other in chains.values())
    return (not chain.private and not chain.to_output and fed_by_conv
            and modules[name].kernel_size == (1, 1))


def _resnet_rearranged(chains, modules):
    """The authors' ResNet rule ("every masked conv whose name does not end in conv3") as a
    predicate over the graph: every masked conv except the 1×1 that closes a bottleneck's residual
    branch. Only the convs whose channels are private (a bottleneck's conv1 and conv2, a
    BasicBlock's conv1) can be moved; the others (downsample.0, a BasicBlock's conv2, both feeding
    the residual sum, and fc) keep their order and only get the sorted-order mask."""
    return [name for name, chain in chains.items() if not _closes_residual_branch(name, chain, chains, modules)]


def rearranged_layers(model):
    """Names of the convs the authors' `--rearrange` applies to, in forward order (see module doc).

    A model with prunable k×k convs (the ResNets; a MobileNet's k×k convs are depthwise and dense)
    follows the authors' ResNet rule, the MobileNets their walk."""
    chains = channel_chains(model)
    modules = dict(model.named_modules())
    if any(modules[name].kernel_size != (1, 1) for name in chains):
        return _resnet_rearranged(chains, modules)
    rearranged = [name for name, chain in chains.items() if chain.private and chain.through_depthwise_or_pool]
    logits = set(_authors_logits_quirk(chains, set(rearranged)))
    return [name for name in chains if name in logits or name in rearranged]


@torch.no_grad()
def rearrangement_orders(model):
    """{name: ascending-ℓ1 filter order} of every rearranged layer: the `orders` of `prune_model`.

    Compute it from the pretrained weights, before pruning (as the authors do).
    """
    modules = dict(model.named_modules())
    return {name: filter_order(modules[name].weight) for name in rearranged_layers(model)}


# ---- physical permutation -------------------------------------------------------------------

def _index_(module, names, perm, dim):
    """In place (keeps Parameter identity for the optimizer): t ← t.index_select(dim, perm)."""
    for name in names:
        tensor = getattr(module, name, None)
        if tensor is not None:
            tensor.copy_(tensor.index_select(dim, perm.to(tensor.device)))


def _permute_outputs_(module, perm):
    if isinstance(module, _BatchNorm):  # BatchNorm2d, or the SyncBatchNorm that --sync_bn converts it to
        _index_(module, ("weight", "bias", "running_mean", "running_var"), perm, 0)
    elif isinstance(module, nn.Conv2d):       # the rearranged conv itself, or a depthwise conv
        _index_(module, ("weight", "bias", "mask"), perm, 0)
    elif isinstance(module, SqueezeExcite):   # x * excite(relu(squeeze(pool(x)))): x's channels are
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        _index_(convs[0], ("weight", "mask"), perm, 1)               # squeeze's input columns
        _index_(convs[-1], ("weight", "bias", "mask"), perm, 0)      # and excite's output rows
    elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise TypeError(f"don't know how to permute the channels of {type(module).__name__}")


def _permute_inputs_(conv, perm):
    _index_(conv, ("weight", "mask"), perm, 1)  # (C_out, C_in, kh, kw): the input columns


@torch.no_grad()
def permute_channels_(model, perms, chains=None):
    """Move the output channels of each conv `name` in `perms` to the order perms[name]
    (new channel i = old channel perms[name][i]), with every tensor indexed by those channels.

    Works for any masked conv whose ChannelChain is private; the function does not change.
    Permute before the optimizer holds state (momentum buffers are not permuted).
    """
    chains = chains or channel_chains(model)
    modules = dict(model.named_modules())
    for name, perm in perms.items():
        chain = chains[name]
        if not chain.private:
            raise ValueError(f"{name}: its output channels are shared (residual add or model output)")
        if not torch.equal(perm.sort().values, torch.arange(modules[name].out_channels, device=perm.device)):
            raise ValueError(f"{name}: not a permutation of its {modules[name].out_channels} output channels")
        for follower in (name, *chain.followers):
            _permute_outputs_(modules[follower], perm)
        for consumer in chain.consumers:
            _permute_inputs_(modules[consumer], perm)


def apply_permutations_(model, orders):
    """After `prune_model(model, ..., orders=orders)`: physically apply each layer's order, so
    that its kept 1×N blocks become contiguous. Returns {name: permutation} of what was applied
    (store it in the checkpoint under 'permutations'; `original_order_state_dict` undoes it).

    Skipped, so the returned dict leaves them out: the logits conv (permuting it would reorder
    the classes; with `--full` its mask stays grouped in ℓ1 order but scattered in memory), convs
    whose outputs join the residual stream (ResNets' downsample.0 and a BasicBlock's conv2: the
    sum mixes their channels with the shortcut's; mask-only, like the logits), and
    convs whose mask does not depend on the order (`uses_order` False: random blocks are
    contiguous already; weight/filter pruning and dense have no 1×N blocks to gather).
    """
    chains = channel_chains(model)
    modules = dict(model.named_modules())
    unknown = set(orders) - set(chains)
    if unknown:
        raise ValueError(f"not masked convs of this model: {', '.join(sorted(unknown))}")
    perms = {name: order.detach().cpu().clone() for name, order in orders.items()
             if chains[name].private and getattr(modules[name], "uses_order", False)}
    permute_channels_(model, perms, chains)
    return perms


def original_order_state_dict(model, permutations):
    """The state_dict of `model` (whose channels were permuted by `permutations`) in the original
    channel order, e.g. to compare with the authors' checkpoints. `model` is left untouched."""
    original = copy.deepcopy(model)
    permute_channels_(original, {name: torch.argsort(perm) for name, perm in permutations.items()})
    return original.state_dict()
