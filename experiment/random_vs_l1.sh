#!/usr/bin/env bash
# Block selection by ℓ1 norm (BlockL1Conv, the paper's) against random blocks (BlockRandomConv),
# both without rearrangement so only the criterion differs (MobileNetV2, p = 0.5, each N).
# See experiment/lib.sh.
SWEEP=random_vs_l1
SWEEP_HELP="ℓ1 vs random blocks: {BlockL1Conv, BlockRandomConv} for each N, without --rearrange."
DEFAULT_ARCHS=mobilenet_v2 DEFAULT_NS="2 4 8 16 32" DEFAULT_RATES=0.5
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
l1_and_random_runs() { plan_each_n "$1" "$2" "BlockL1Conv 0" "BlockRandomConv 0"; }
sweep_grid l1_and_random_runs
