"""Gradual pruning (Zhu & Gupta 2017): the pruning rate ramps up cubically during fine-tuning.

    s_t = s_f · (1 − (1 − (t − t0)/(t1 − t0))³)    for t0 ≤ t ≤ t1 (steps), s_f after t1

Every `every` steps from t0, and at t1, each prunable layer's mask is recomputed from its
*current* weights at rate s_t with the layer's own criterion (1×N ℓ1 blocks, random blocks,
weights, filters), and the newly pruned weights are zeroed. The update at t1 uses s_f itself,
so the final per-layer sparsity is exactly the one-shot rate (floor(#blocks · s_f) blocks).

Pruned blocks never return. A pruned weight is zero, the masked forward gives it no gradient,
weight decay of zero is zero, and the update also clears its optimizer state (momentum, Adam's
moments), so it stays exactly zero; its block's ℓ1 norm is then 0, the lowest, so every later
update prunes it again. Random blocks are drawn from the same seeded permutation at every
update, so their pruned sets are nested too (and the final one is the one-shot draw).

With filter rearrangement the filters are sorted (by the ℓ1 norm of the dense weights) and
physically permuted once, before the first update; after that, blocks over the natural order
are blocks over the sorted order, as in one-shot pruning. Layers that are never permuted (the
logits conv with --full) keep their order and get it at every update.

The step t is the LR scheduler's count of optimizer steps, so a run resumed from a checkpoint
(masks, weights, optimizer and scheduler state) continues the ramp exactly.
"""
import torch

from utils.pruning import is_classifier, masked_convs, prune_model


def cubic_rate(step, final_rate, start_step, end_step):
    """s_t of the cubic schedule at optimizer step `step` (0 before t0, s_f from t1 on)."""
    if step >= end_step:
        return final_rate
    if step <= start_step:
        return 0.0
    remaining = 1 - (step - start_step) / (end_step - start_step)
    return final_rate * (1 - remaining ** 3)


def update_steps(start_step, end_step, every):
    """The steps at which masks are recomputed: t0, t0 + every, … below t1, and t1."""
    return [*range(start_step, end_step, every), end_step]


def prunable_sparsity(model, full=False):
    """Fraction of pruned weights over the layers that are pruned (the classifier only with --full)."""
    kept = total = 0
    for name, conv in masked_convs(model):
        if full or not is_classifier(name):
            kept += conv.mask.count_nonzero().item()
            total += conv.mask.numel()
    return 1 - kept / max(total, 1)


class GradualPruner:
    """Recomputes the masks of `model` on the cubic schedule; call `before_step` before each step.

    `orders`: the rearrangement order of every layer that blocks are formed over but which was
    not permuted physically (see the module docstring). `on_update(step, rate)` is called after
    each update (the trainer logs the ramp with it).
    """

    def __init__(self, model, final_rate, N, start_step, end_step, every, full=False, orders=None, seed=0,
                 on_update=None):
        self.model, self.final_rate, self.N, self.full = model, final_rate, N, full
        self.start_step, self.end_step, self.every = start_step, end_step, every
        self.orders, self.seed, self.on_update = orders or {}, seed, on_update

    def is_update(self, step):
        if step == self.end_step:
            return True
        return self.start_step <= step < self.end_step and (step - self.start_step) % self.every == 0

    def before_step(self, step, optimizer):
        """Update the masks if `step` is on the schedule; returns the rate applied, or None."""
        if not self.is_update(step):
            return None
        rate = cubic_rate(step, self.final_rate, self.start_step, self.end_step)
        # The same seed at every update: random blocks come from one permutation, so they nest.
        generator = torch.Generator().manual_seed(self.seed)
        prune_model(self.model, rate, self.N, full=self.full, orders=self.orders, generator=generator)
        clear_pruned_state_(self.model, optimizer)
        if self.on_update is not None:
            self.on_update(step, rate)
        return rate


@torch.no_grad()
def clear_pruned_state_(model, optimizer):
    """Zero the optimizer state (momentum, Adam moments) of pruned weights, so they stay zero."""
    for _, conv in masked_convs(model):
        for value in optimizer.state.get(conv.weight, {}).values():
            if torch.is_tensor(value) and value.shape == conv.mask.shape:
                value.mul_(conv.mask)
