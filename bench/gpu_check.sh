#!/usr/bin/env bash
# The checks that need a CUDA GPU, which CI does not have. One call, run from the repository root:
#
#     bash bench/gpu_check.sh OUT_DIR [STEPS...]
#
# STEPS (default: all, in this order): ddp sigterm dali speed quickstart suite. Each step's output
# goes to OUT_DIR/<step>.log; the last lines printed are one PASS/FAIL line per step with its time,
# then the img/s lines of the training runs. Needs Debian's Fashion-MNIST for `quickstart` (as the
# README's first command does); the other runs train on generated 500×375 JPEGs.
# Environment: PYTHON (default python3), IMAGES (generated JPEGs per split, default 2048),
# TRAIN_FLAGS (default: --amp fp16 --channels_last --sync_bn).
set -u
all_steps="ddp sigterm dali speed quickstart suite"
dir=${1:?usage: bash bench/gpu_check.sh OUT_DIR [STEPS...]}
shift
steps=${*:-$all_steps}
for step in $steps; do
    [[ " $all_steps " == *" $step "* ]] || { echo "bench/gpu_check.sh: unknown step '$step' (expected some of: $all_steps)" >&2; exit 2; }
done
out=$(mkdir -p "$dir" && cd "$dir" && pwd)
export out py=${PYTHON:-python3} jpegs=$out/jpegs images=${IMAGES:-2048}
export train_flags=${TRAIN_FLAGS:---amp fp16 --channels_last --sync_bn}
summary=()

run_step() {  # run_step NAME SECONDS COMMAND: time it, log it, remember PASS/FAIL
    local name=$1 limit=$2 start rc
    start=$(date +%s)
    timeout -k 10 "$limit" bash -c "$3" >"$out/$name.log" 2>&1
    rc=$?
    summary+=("$([ $rc = 0 ] && echo PASS || echo FAIL) $name (exit $rc, $(($(date +%s) - start)) s)")
}

jpeg_data() {
    [ -d "$jpegs/train" ] || $py bench/loaders.py --write "$jpegs" --images "$images" >"$out/jpegs.log" 2>&1
}

# One pruned MobileNetV2 fine-tuning on the generated JPEGs (fp16, channels_last, SyncBatchNorm),
# one process per GPU through torchrun (NCCL); the log's img/s lines include the loader.
train() {  # train JOB_DIR EPOCHS [EXTRA FLAGS...]
    local job=$1 epochs=$2
    shift 2
    # shellcheck disable=SC2086  # train_flags is a list of flags
    $py -m torch.distributed.run --standalone --nproc_per_node="$($py -c 'import torch; print(max(1, torch.cuda.device_count()))')" \
        imagenet.py --arch mobilenet_v2 --data_path "$jpegs" --num_classes 4 --N 4 --pr_target 0.5 --rearrange \
        $train_flags --num_epochs "$epochs" --warmup_epochs 0 --train_batch_size 256 --eval_batch_size 256 \
        --workers 12 --print_freq 2 --skip_initial_eval --job_dir "$job" "$@"
}

sigterm_then_resume() {  # SIGTERM to the launcher's process group mid-epoch, as a scheduler sends it
    local job=$out/sigterm_job log=$out/sigterm_train.log
    setsid bash -c "train $job 2" >"$log" 2>&1 &
    local group=$!
    for _ in $(seq 240); do grep -q "img/s" "$log" && break; sleep 0.5; done
    kill -TERM -- -"$group"
    # The ranks run in their own sessions: wait for rank 0's stop line, then for the launcher.
    for _ in $(seq 120); do grep -q "stopping" "$log" && break; sleep 0.5; done
    while kill -0 -- -"$group" 2>/dev/null; do sleep 0.5; done
    grep -E "SIGTERM|stopping|SignalException" "$log"
    [ -f "$job/checkpoint/model_last.pt" ] || { echo "no model_last.pt after SIGTERM"; return 1; }
    train "$job" 2 --resume
}

dali_run() {  # with DALI installed: a GPU-decoding run; without it: the one-line usage error, exit 2
    if $py -c "import nvidia.dali" 2>/dev/null; then
        train "$out/dali_job" 1 --use_dali
    else
        $py imagenet.py --use_dali --data_path "$jpegs" --job_dir "$out/dali_job"
        local rc=$?
        echo "DALI is not installed here; imagenet.py --use_dali exited with $rc (2 expected)"
        [ $rc = 2 ]
    fi
}

suite() {  # the C++ kernel is built first, so that parallel test workers don't race to build it
    $py -c "from sparse.kernel import available_backends; print('C++ kernel:', available_backends())" || return
    local parallel=
    $py -c "import xdist" 2>/dev/null && parallel="-n 8"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=2 $py -m pytest -q -p no:cacheprovider $parallel tests
}

speed() {  # the model's own training rate on random data, dense vs masked, no loader
    $py bench/train_step.py --device cuda --batch 256 --steps 20 --amp fp16 --channels_last &&
    $py bench/train_step.py --device cuda --batch 256 --steps 20 --amp fp16 --channels_last --cudnn_benchmark &&
    $py bench/train_step.py --device cuda --batch 256 --steps 20 --amp bf16 --channels_last --cudnn_benchmark &&
    $py bench/train_step.py --device cuda --batch 256 --steps 20
}

export -f jpeg_data train sigterm_then_resume dali_run suite speed
nvidia-smi -L
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name())"
for step in $steps; do
    case $step in
        suite) run_step suite 360 suite ;;
        quickstart) run_step quickstart 240 '$py imagenet.py --arch mobilenet_v2 \
            --pretrained_model pretrained/fmnist32/mobilenet_v2.pth --N 4 --pr_target 0.5 --rearrange \
            --num_epochs 1 --warmup_epochs 0 --lr 0.01 --train_batch_size 128 --eval_batch_size 500 \
            --channels_last --job_dir "$out/quickstart_job"' ;;
        ddp) jpeg_data; run_step ddp 240 'train "$out/ddp_job" 2' ;;
        sigterm) jpeg_data; run_step sigterm 240 sigterm_then_resume ;;
        dali) jpeg_data; run_step dali 180 dali_run ;;
        speed) run_step speed 240 speed ;;
    esac
done
tail -n 3 "$out/suite.log" 2>/dev/null
grep -h "img/s" "$out"/ddp.log "$out"/speed.log 2>/dev/null | tail -n 12
printf '%s\n' "${summary[@]}"
