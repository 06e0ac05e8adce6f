#!/usr/bin/env bash
# The study from the strong dense baseline (pretrained/fmnist32/mobilenet_v2.pth, made by
# experiment/train_dense_fmnist.sh), written to experiment/results/strong/. MobileNetV2, 32 px, CPU.
# Each run prunes that model, fine-tunes 1 epoch on 2,560 training images (a subset drawn with the
# run's seed; batch 64, lr 0.01, no warm-up) and is evaluated once, at the end, on all 10,000 test
# images (the same for every seed). Cubic runs ramp over the first half of that epoch, updating the
# masks every 4 steps; KD runs use α = 0.5, T = 4 with the dense model as teacher. Seeds 0, 1, 2.
# Most important first: one-shot vs cubic vs KD (schedule_kd.sh), then Fig. 4's weight and filter
# baselines at the same rates, then Table 1. Re-running skips what is finished.
# Usage: experiment/study_strong.sh [ROOT] (default experiment/runs/strong)
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
root=${1:-experiment/runs/strong}
# One thread per run, two runs at a time: on a shared machine a descheduled OpenMP thread stalls its run.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CUBIC_EVERY=${CUBIC_EVERY:-4}
common=(--pretrained_dir "$here/../pretrained/fmnist32" --root "$root" --seeds "0 1 2" --jobs 2)
recipe=(-- --train_images 2560 --val_images 10000 --eval_batch_size 1000 --channels_last --skip_initial_eval)
"$here/schedule_kd.sh" --rates "0.5 0.9 0.7" "${common[@]}" "${recipe[@]}"
"$here/fig4.sh" --rates "0.5 0.9 0.7" --N "4 16" "${common[@]}" "${recipe[@]}"
"$here/table1.sh" "${common[@]}" "${recipe[@]}"
"${PYTHON:-python}" -m experiment.aggregate "$root" --out "$here/results/strong"
