#!/usr/bin/env bash
# One-shot vs gradual (cubic) pruning, each without and with distillation from the dense model:
# rearranged 1×N (MobileNetV2) for each N and rate. See experiment/lib.sh and --help.
SWEEP=schedule_kd
SWEEP_HELP="One-shot vs cubic, without/with --distill: rearranged BlockL1Conv for each N and rate.
Environment: CUBIC_EVERY (optimizer steps between mask updates, default 50)."
DEFAULT_ARCHS=mobilenet_v2 DEFAULT_NS="4 16" DEFAULT_RATES="0.5 0.7 0.9"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
schedule_kd_runs() {
  local n variant
  for n in $NS; do
    for variant in oneshot cubic kd cubic_kd; do plan "$1" BlockL1Conv "$n" "$2" 1 "$variant"; done
  done
}
sweep_grid schedule_kd_runs
