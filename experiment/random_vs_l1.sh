#!/usr/bin/env bash
# Block selection by ℓ1 norm (BlockL1Conv, the paper's) against random blocks (BlockRandomConv),
# both without rearrangement so only the criterion differs (MobileNetV2, p = 0.5, each N).
# See experiment/lib.sh.
SWEEP=random_vs_l1
SWEEP_HELP="ℓ1 vs random blocks: {BlockL1Conv, BlockRandomConv} for each N, without --rearrange."
DEFAULT_ARCHS=mobilenet_v2 DEFAULT_NS="2 4 8 16 32" DEFAULT_RATES=0.5
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
for arch in $ARCHS; do
  for rate in $RATES; do
    for n in $NS; do
      plan "$arch" BlockL1Conv "$n" "$rate" 0
      plan "$arch" BlockRandomConv "$n" "$rate" 0
    done
  done
done
run_sweep
