#!/usr/bin/env bash
# Fig. 4 of the paper: top-1 against the pruning rate p ∈ {0.1 … 0.9} for weight pruning, filter
# pruning and rearranged 1×N pruning for each N (MobileNetV2; the journal's Fig. 4b is ResNet-50:
# --arch resnet50 --pretrained_dir DIR with DIR/resnet50.pth, e.g. torchvision's). See experiment/lib.sh.
SWEEP=fig4
SWEEP_HELP="Fig. 4: every rate × {weight, filter, 1×N with --rearrange for each N}."
DEFAULT_ARCHS=mobilenet_v2 DEFAULT_NS="2 4 8 16 32" DEFAULT_RATES="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_options "$@"
sweep_grid plan_methods
