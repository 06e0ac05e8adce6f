#!/usr/bin/env bash
# Table 2 of the paper: the four MobileNets at p = 0.5 under weight pruning (UnstructureConv),
# filter pruning (StructureConv) and rearranged 1×N pruning for each N. See experiment/lib.sh.
# The ResNets take the same grid: --arch "resnet18 resnet34 resnet50" (ResNet-50: the journal's Fig. 4b at p = 0.5).
SWEEP=table2
SWEEP_HELP="Table 2: every arch × {weight, filter, 1×N with --rearrange for each N}."
DEFAULT_ARCHS="mobilenet_v1 mobilenet_v2 mobilenet_v3_small mobilenet_v3_large" DEFAULT_NS="2 4 8 16 32" DEFAULT_RATES=0.5
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
sweep_grid plan_methods
