#!/usr/bin/env bash
# The committed study on the embedded Fashion-MNIST set (MobileNetV2, 32 px, CPU), whose tables
# and plots are in experiment/results/. One dense model (5 epochs on 20,000 images) is pruned by
# every run; each run fine-tunes 1 epoch on 3,000 images and is evaluated on 2,000 (the sweeps'
# embedded defaults, experiment/lib.sh). 3 seeds throughout.
# Compute: 114 runs of 13-25 s plus the dense model, about an hour on 2 shared cores, so Fig. 4
# has 5 of the paper's 9 rates (see experiment/results/README.md).
# Re-running it skips what is finished. Usage: experiment/study.sh [ROOT] (default experiment/runs/study)
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
root=${1:-experiment/runs/study}
seeds="0 1 2"
# Most important first: p = 0.5 (Table 1, ℓ1 vs random, Table 2's V2 column), then Fig. 4's other rates.
"$here/table1.sh" --root "$root" --seeds "$seeds"
"$here/random_vs_l1.sh" --root "$root" --seeds "$seeds"
"$here/fig4.sh" --root "$root" --seeds "$seeds" --rates "0.5 0.7 0.9 0.3 0.1"
"${PYTHON:-python}" -m experiment.aggregate "$root" --out "$here/results"
