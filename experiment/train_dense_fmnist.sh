#!/usr/bin/env bash
# Train the dense MobileNetV2 that the quick start and the embedded study prune, and write it to
# pretrained/fmnist32/mobilenet_v2.pth (a plain state_dict of tensors; loads with weights_only=True).
# Fashion-MNIST at 32 px (all 60,000 training images), the authors' layout (width 1.0), SGD with
# Nesterov momentum, batch 128, weight decay 4e-5, channels_last (2-3× faster than NCHW on the CPU),
# in two stages (a warm restart): 4 epochs at lr 0.1 (1 warm-up epoch, then cosine per epoch),
# then 3 more from that model at lr 0.03 (cosine, no warm-up).
# Every epoch is evaluated on all 10,000 test images (logged only; the last epoch is kept, so the
# test set chooses nothing). Usage: experiment/train_dense_fmnist.sh [JOB_ROOT]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
job_root=${1:-$repo/experiment/runs}
python=${PYTHON:-python}
# One thread: on a busy machine a descheduled OpenMP thread stalls every parallel region (10× slower).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
recipe=(--arch mobilenet_v2 --conv_type DenseConv --img_size 32 --num_epochs 0 --optimizer sgd --nesterov
        --momentum 0.9 --weight_decay 4e-5 --train_batch_size 128 --eval_batch_size 500 --workers 1
        --channels_last --seed 0)
"$python" "$repo/imagenet.py" "${recipe[@]}" --pretrain_epochs 4 --lr 0.1 --warmup_epochs 1 \
  --job_dir "$job_root/dense_fmnist"
"$python" "$repo/imagenet.py" "${recipe[@]}" --pretrain_epochs 3 --lr 0.03 --warmup_epochs 0 \
  --pretrained_model "$job_root/dense_fmnist/checkpoint/dense.pt" --job_dir "$job_root/dense_fmnist_stage2"
mkdir -p "$repo/pretrained/fmnist32"
"$python" - "$job_root/dense_fmnist_stage2/checkpoint/dense.pt" "$repo/pretrained/fmnist32/mobilenet_v2.pth" <<'PY'
import os, sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["state_dict"]
state = {k: v for k, v in state.items() if not k.endswith(".mask")}  # dense: every mask is all ones
tmp = sys.argv[2] + ".tmp"
torch.save(state, tmp)
os.replace(tmp, sys.argv[2])
print(f"wrote {sys.argv[2]} ({len(state)} tensors)")
PY
