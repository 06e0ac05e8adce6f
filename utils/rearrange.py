# TEMPORARY local stand-in until the rearrange branch merges (mask-only, not committed)
import json
from utils.pruning import filter_order, masked_convs
def rearrangement_orders(model):
    return {n: filter_order(c.weight) for n, c in masked_convs(model) if n.startswith('features') and '.conv.0' in n}
def apply_permutations_(model, orders):
    return {}
