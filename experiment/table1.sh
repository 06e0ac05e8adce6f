#!/usr/bin/env bash
# Table 1 of the paper: 1×N pruning at p = 0.5 for N ∈ {2, 4, 8, 16, 32}, without and with filter
# rearrangement (MobileNetV2). See experiment/lib.sh and --help.
SWEEP=table1
SWEEP_HELP="Table 1: BlockL1Conv for each N, without and with --rearrange."
DEFAULT_ARCHS=mobilenet_v2 DEFAULT_NS="2 4 8 16 32" DEFAULT_RATES=0.5
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
table1_runs() { plan_each_n "$1" "$2" "BlockL1Conv 0" "BlockL1Conv 1"; }
sweep_grid table1_runs
