"""The sparsity report printed and saved after pruning: per layer and totals, dense vs effective."""
import torch
from torch import nn

from .pruning import MaskedConv2d


def _output_sizes(model, img_size):
    """Spatial output size (H·W) of every conv for one image, via forward hooks."""
    sizes, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(
                lambda m, inputs, out, name=name: sizes.__setitem__(name, out.shape[-1] * out.shape[-2])))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sizes


def sparsity_report(model, N, img_size):
    """Rows per prunable conv and totals over the whole model (params and multiply-adds)."""
    sizes = _output_sizes(model, img_size)
    rows, totals = [], dict(prunable_layers=0, prunable_weights=0, prunable_kept=0,
                            params=0, params_kept=0, macs=0, macs_kept=0)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        weights = module.weight.numel()
        kept = int(module.mask.count_nonzero()) if isinstance(module, MaskedConv2d) else weights
        totals["macs"] += weights * sizes[name]
        totals["macs_kept"] += kept * sizes[name]
        if isinstance(module, MaskedConv2d):
            c_out, c_in = module.weight.shape[:2]
            groups = -(-c_out // N)
            per_block = module.mask.view(c_out, c_in, -1).any(dim=2)           # (C_out, C_in)
            padded = torch.nn.functional.pad(per_block, (0, 0, 0, groups * N - c_out))
            blocks_pruned = int((~padded.view(groups, N, c_in).any(dim=1)).sum())
            rows.append(dict(layer=name, shape=list(module.weight.shape), N=N, blocks=groups * c_in,
                             blocks_pruned=blocks_pruned, sparsity=1 - kept / weights))
            totals["prunable_layers"] += 1
            totals["prunable_weights"] += weights
            totals["prunable_kept"] += kept
    for p in model.parameters():
        totals["params"] += p.numel()
    totals["params_kept"] = totals["params"] - (totals["prunable_weights"] - totals["prunable_kept"])
    return rows, totals


def format_report(rows, totals):
    lines = [f"{'layer':<28} {'shape':<20} {'N':>3} {'blocks pruned':>15} {'sparsity':>9}"]
    for r in rows:
        lines.append(f"{r['layer']:<28} {'x'.join(map(str, r['shape'])):<20} {r['N']:>3} "
                     f"{r['blocks_pruned']:>7}/{r['blocks']:<7} {100 * r['sparsity']:>8.2f}%")
    t = totals
    lines += [f"prunable layers: {t['prunable_layers']}, prunable weights kept: {t['prunable_kept']:,} / "
              f"{t['prunable_weights']:,} ({100 * (1 - t['prunable_kept'] / max(1, t['prunable_weights'])):.2f}% pruned)",
              f"params: {t['params']:,} dense, {t['params_kept']:,} effective",
              f"multiply-adds per image: {t['macs']:,} dense, {t['macs_kept']:,} effective "
              f"({t['macs'] / max(1, t['macs_kept']):.2f}x fewer)"]
    return "\n".join(lines)
