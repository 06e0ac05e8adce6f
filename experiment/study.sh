#!/usr/bin/env bash
# The committed study on the embedded Fashion-MNIST set (MobileNetV2, 32 px, CPU), whose tables
# and plots are in experiment/results/. One dense model (5 epochs on 20,000 images) is pruned by
# every run; each run fine-tunes 1 epoch on 3,000 images and is evaluated on 2,000.
# Compute: about 120 runs of ~25 s on 2 shared cores, so the grid is reduced (see
# experiment/results/README.md): 3 seeds everywhere, Fig. 4 at p ∈ {0.3, 0.5, 0.7, 0.9}.
# Re-running it skips what is finished. Usage: experiment/study.sh [ROOT] (default experiment/runs/study)
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
root=${1:-experiment/runs/study}
seeds="0 1 2"
# Most important first: everything at p = 0.5 (Table 1, ℓ1 vs random, Fig. 4's p = 0.5 column).
"$here/table1.sh" --root "$root" --seeds "$seeds"
"$here/random_vs_l1.sh" --root "$root" --seeds "$seeds"
"$here/fig4.sh" --root "$root" --seeds "$seeds" --rates "0.5 0.7 0.9 0.3"
"${PYTHON:-python}" -m experiment.aggregate "$root" --out "$here/results"
