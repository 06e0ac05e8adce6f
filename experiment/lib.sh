# experiment/lib.sh: what every sweep script shares. Sourced, not run.
#
# A sweep script sets its defaults (SWEEP, DEFAULT_ARCHS, DEFAULT_NS, DEFAULT_RATES), calls
# `parse_options "$@"`, then `sweep_grid F` with a function F ARCH RATE that lists that point's
# runs (`plan ARCH CONV_TYPE N RATE REARRANGE`, once per seed is done for it). Each run gets its own job dir
#   ROOT/ARCH/LABEL/seedS      e.g. experiment/runs/embedded/mobilenet_v2/1x4_p0.5_rearranged/seed0
# so sweeps sharing a ROOT share their common runs (Table 1's rearranged 1×N runs at p = 0.5 are
# also Table 2's and Fig. 4's). Re-running a sweep skips finished runs, resumes interrupted
# ones (--resume when checkpoint/model_last.pt exists) and restarts runs that died before their
# first checkpoint. Every arch is pruned from one dense model: ROOT/ARCH/dense (pre-trained once
# here, seed 0) or --pretrained_dir DIR/ARCH.pth.

set -euo pipefail

EXPERIMENT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$EXPERIMENT_DIR")
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
ALL_ARCHS="mobilenet_v1 mobilenet_v2 mobilenet_v3_small mobilenet_v3_large resnet18 resnet34 resnet50"
ALL_NS="2 4 8 16 32"
ALL_RATES="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9"

die() { echo "$SWEEP: $*" >&2; exit 2; }

usage() {
  cat <<EOF
usage: experiment/$SWEEP.sh [options] [-- imagenet.py flags for every run]

$SWEEP_HELP

Data and schedule (defaults: the embedded Fashion-MNIST set on this machine's CPU):
  --data_path DIR        ImageNet-style folder (train/, val/): the paper's recipe, 224 px,
                         imagenet.py's defaults; needs --pretrained_dir or --pretrain_epochs
  --epochs E             fine-tuning epochs per run (ImageNet 180, embedded 1, --quick 1)
  --quick                a smoke run of the sweep in minutes: 256 train / 256 val images, 32 px,
                         1 epoch, a 1-epoch dense model, and of the default N and rate lists only
                         the first and last value (root experiment/runs/quick)
  --pretrained_dir DIR   prune DIR/ARCH.pth (the authors' dense files, torchvision's state_dicts, ours)
  --pretrain_epochs K    pre-train the dense model here for K epochs instead
                         (embedded 5 on 20,000 images, --quick 1)
Grid:
  --arch "A ..."         architectures (default: $DEFAULT_ARCHS)
  --N "N ..."            block heights (default: $DEFAULT_NS)
  --rates "P ..."        pruning rates (default: $DEFAULT_RATES)
  --seeds "S ..."        fine-tuning seeds, one job dir each (default: 0)
Where and how:
  --root DIR             job dirs go under DIR (default: experiment/runs/{embedded,quick,imagenet})
  --gpus "G ..."         GPU ids; runs go to them in parallel, one GPU per run
  --jobs K               parallel runs without GPUs (default 1)
  --dry_run              print what each run would do, run nothing
Arguments after -- go to every imagenet.py call (e.g. -- --workers 8 --amp bf16).
Environment: PYTHON (default: python on PATH).
EOF
}

parse_options() {
  DATA_PATH="" ARCHS=$DEFAULT_ARCHS NS="" RATES="" SEEDS=0 EPOCHS="" QUICK=0
  ROOT="" PRETRAINED_DIR="" PRETRAIN_EPOCHS="" GPUS="" JOBS="" DRY_RUN=0 EXTRA=()
  while (($#)); do
    case $1 in
      --data_path|--arch|--N|--rates|--seeds|--epochs|--root|--pretrained_dir|--pretrain_epochs|--gpus|--jobs)
        (($# >= 2)) || die "$1 needs a value"
        case $1 in
          --data_path) DATA_PATH=$2 ;; --arch) ARCHS=$2 ;; --N) NS=$2 ;; --rates) RATES=$2 ;;
          --seeds) SEEDS=$2 ;; --epochs) EPOCHS=$2 ;; --root) ROOT=$2 ;; --gpus) GPUS=$2 ;;
          --pretrained_dir) PRETRAINED_DIR=$2 ;; --pretrain_epochs) PRETRAIN_EPOCHS=$2 ;; --jobs) JOBS=$2 ;;
        esac
        shift 2 ;;
      --quick) QUICK=1; shift ;;
      --dry_run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; EXTRA=("$@"); break ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
  done
  if ((QUICK)); then  # every method and code path, fewer grid points
    NS=${NS:-$(ends $DEFAULT_NS)} RATES=${RATES:-$(ends $DEFAULT_RATES)}
  else
    NS=${NS:-$DEFAULT_NS} RATES=${RATES:-$DEFAULT_RATES}
  fi
  local word
  for word in $ARCHS; do [[ " $ALL_ARCHS " == *" $word "* ]] || die "--arch: unknown architecture $word"; done
  for word in $NS $SEEDS $EPOCHS $PRETRAIN_EPOCHS $JOBS; do [[ $word =~ ^[0-9]+$ ]] || die "expected a whole number, got $word"; done
  for word in $RATES; do [[ $word =~ ^0?\.[0-9]+$ ]] || die "--rates: expected rates in [0, 1) like 0.5, got $word"; done
  [[ -z $PRETRAINED_DIR || -d $PRETRAINED_DIR ]] || die "--pretrained_dir $PRETRAINED_DIR: no such folder"
  [[ -z $GPUS || -z $JOBS ]] || die "give --gpus or --jobs, not both"
  [[ -z $JOBS ]] || ((JOBS >= 1)) || die "--jobs: expected at least 1, got $JOBS"
  [[ -z $DATA_PATH || $QUICK == 0 ]] || die "--quick runs on the embedded data; drop --data_path"

  # The recipe. Fine-tuning flags go to every run; DENSE_FLAGS override them for the dense job.
  if [[ -n $DATA_PATH ]]; then
    [[ -d $DATA_PATH ]] || die "--data_path $DATA_PATH: no such folder"
    [[ -n $PRETRAINED_DIR || -n $PRETRAIN_EPOCHS ]] || die "on --data_path, give --pretrained_dir (the dense models to prune) or --pretrain_epochs"
    COMMON=(--data_path "$DATA_PATH")
    DENSE_FLAGS=()
    EPOCHS=${EPOCHS:-180}
    ROOT=${ROOT:-experiment/runs/imagenet}
  else
    # Fashion-MNIST at 32 px. Warm-up off (runs are one or two epochs); the dense model sees
    # more images at a higher rate than each fine-tune.
    local train=3000 val=2000 dense_train=20000 dense_epochs=5
    ((QUICK)) && train=256 val=256 dense_train=512 dense_epochs=1
    COMMON=(--img_size 32 --train_images "$train" --val_images "$val" --train_batch_size 64
            --lr 0.01 --warmup_epochs 0 --workers 0)
    DENSE_FLAGS=(--train_images "$dense_train" --lr 0.05)
    EPOCHS=${EPOCHS:-1}
    PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-$dense_epochs}
    ROOT=${ROOT:-experiment/runs/$( ((QUICK)) && echo quick || echo embedded)}
  fi

  # Parallel slots: one per GPU, or --jobs CPU processes sharing the cores.
  SLOTS=()
  if [[ -n $GPUS ]]; then
    for word in $GPUS; do [[ $word =~ ^[0-9]+$ ]] || die "--gpus: expected GPU ids, got $word"; SLOTS+=("--gpus $word"); done
  else
    for ((word = 0; word < ${JOBS:-1}; word++)); do SLOTS+=(""); done
    if ((${JOBS:-1} > 1)) && [[ -z ${OMP_NUM_THREADS:-} ]]; then
      export OMP_NUM_THREADS=$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))
    fi
  fi
  RUNS=()
}

# ends WORD...: the first and the last word (one word if there is one).
ends() {
  if (($# > 1)); then echo "$1 ${!#}"; else echo "$1"; fi
}

# label CONV_TYPE N RATE REARRANGE [VARIANT] → the job dir's name for that method.
# VARIANT (schedule_kd.sh): oneshot (default, no suffix), cubic, kd, cubic_kd.
label() {
  local conv=$1 n=$2 rate=$3 rearrange=$4 variant=${5:-oneshot} name
  case $conv in
    UnstructureConv) name=weight ;;
    StructureConv) name=filter ;;
    BlockL1Conv) name=1x$n ;;
    BlockRandomConv) name=random1x$n ;;
    *) die "no label for $conv" ;;
  esac
  name+=_p$rate
  if ((rearrange)) && [[ $conv == Block* ]]; then name+=_rearranged; fi
  [[ $variant == oneshot ]] || name+=_$variant
  echo "$name"
}

# plan ARCH CONV_TYPE N RATE REARRANGE [VARIANT]: add this configuration, once per seed.
plan() {
  local seed
  for seed in $SEEDS; do RUNS+=("$1 $2 $3 $4 $5 $seed ${6:-oneshot}"); done
}

# variant_flags VARIANT: the imagenet.py flags of a pruning variant (see label). The cubic ramp
# runs over the first half of fine-tuning (imagenet.py's default end), updating every CUBIC_EVERY steps.
variant_flags() {
  case $1 in
    oneshot) ;;
    cubic) echo "--prune_schedule cubic --prune_every ${CUBIC_EVERY:-50}" ;;
    kd) echo "--distill" ;;
    cubic_kd) echo "--prune_schedule cubic --prune_every ${CUBIC_EVERY:-50} --distill" ;;
    *) die "unknown variant $1" ;;
  esac
}

# plan_each_n ARCH RATE "CONV_TYPE REARRANGE"...: those 1×N methods for every --N.
plan_each_n() {
  local arch=$1 rate=$2 n method; shift 2
  for n in $NS; do
    for method in "$@"; do plan "$arch" "${method% *}" "$n" "$rate" "${method#* }"; done
  done
}

# plan_methods ARCH RATE: the paper's rows (weight pruning, filter pruning, rearranged 1×N for each N).
plan_methods() {
  plan "$1" UnstructureConv - "$2" 0
  plan "$1" StructureConv - "$2" 0
  plan_each_n "$1" "$2" "BlockL1Conv 1"
}

# sweep_grid FUNCTION: `FUNCTION ARCH RATE` for every --arch and --rates value, then run it all.
sweep_grid() {
  local arch rate
  for arch in $ARCHS; do
    for rate in $RATES; do "$1" "$arch" "$rate"; done
  done
  run_sweep
}

dense_model() {
  if [[ -n $PRETRAINED_DIR ]]; then echo "$PRETRAINED_DIR/$1.pth"; else echo "$ROOT/$1/dense/checkpoint/dense.pt"; fi
}

job_state() { PYTHONPATH=$REPO_DIR "$PYTHON" -m experiment.jobs "$@"; }

# launch SLOT JOB_DIR STATE imagenet.py-flags...: run one job (or print it), its output in JOB_DIR/sweep.log.
launch() {
  local slot=$1 dir=$2 state=$3; shift 3
  local command=("$PYTHON" "$REPO_DIR/imagenet.py" "${COMMON[@]}" "$@" --job_dir "$dir" $slot "${EXTRA[@]}")
  [[ $state == resume ]] && command+=(--resume)
  if ((DRY_RUN)); then echo "[$state] ${command[*]}"; return 0; fi
  # `new`: whatever is there (a run that died before its first checkpoint) is started afresh.
  [[ $state == new ]] && rm -rf "$dir"
  mkdir -p "$dir"
  local start=$SECONDS
  echo "$(date +%H:%M:%S) start  $dir ($state${slot:+, $slot})"
  if "${command[@]}" >>"$dir/sweep.log" 2>&1; then
    echo "$(date +%H:%M:%S) done   $dir ($((SECONDS - start)) s)"
  else
    echo "$(date +%H:%M:%S) FAILED $dir: see $dir/sweep.log" >&2
    return 1
  fi
}

dense_job() {
  local slot=$1 arch=$2 dir=$ROOT/$2/dense
  [[ -z $PRETRAINED_DIR ]] || { [[ -f $(dense_model "$arch") ]] || die "$(dense_model "$arch") does not exist"; return 0; }
  local state
  state=$(job_state dense_state "$dir")
  [[ $state == done ]] && return 0
  launch "$slot" "$dir" "$state" --arch "$arch" --conv_type DenseConv --num_epochs 0 --pretrain_epochs "$PRETRAIN_EPOCHS" \
    --seed 0 "${DENSE_FLAGS[@]}"
}

prune_job() {
  local slot=$1 arch=$2 conv=$3 n=$4 rate=$5 rearrange=$6 seed=$7 variant=${8:-oneshot}
  local dir state
  dir=$ROOT/$arch/$(label "$conv" "$n" "$rate" "$rearrange" "$variant")/seed$seed
  state=$(job_state state "$dir" "$EPOCHS")
  [[ $state == done ]] && { echo "skip   $dir (finished)"; return 0; }
  local flags=(--arch "$arch" --conv_type "$conv" --pr_target "$rate" --seed "$seed"
               --num_epochs "$EPOCHS" --pretrained_model "$(dense_model "$arch")")
  # N and rearrangement mean nothing to weight and filter pruning: their commands leave them out.
  if [[ $conv == Block* ]]; then
    flags+=(--N "$n")
    ((rearrange)) && flags+=(--rearrange)
  fi
  # shellcheck disable=SC2207  # the variant's flags are words on purpose
  flags+=($(variant_flags "$variant"))
  launch "$slot" "$dir" "$state" "${flags[@]}"
}

# in_slots FUNCTION ITEM...: run `FUNCTION SLOT ITEM` for every item, the items dealt round-robin
# to the slots (GPUs or CPU jobs), each slot working through its share in order. Fails if any failed.
in_slots() {
  local function=$1; shift
  local items=("$@") pids=() slot i failed=0
  for ((slot = 0; slot < ${#SLOTS[@]}; slot++)); do
    (
      status=0
      for ((i = slot; i < ${#items[@]}; i += ${#SLOTS[@]})); do
        # shellcheck disable=SC2086  # an item is several words on purpose
        $function "${SLOTS[slot]}" ${items[i]} || status=1
      done
      exit $status
    ) &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  return $failed
}

run_sweep() {
  ((${#RUNS[@]})) || die "nothing to run"
  echo "$SWEEP: ${#RUNS[@]} runs under $ROOT ($EPOCHS epoch(s) each; ${#SLOTS[@]} at a time)"
  local archs=() run
  for run in "${RUNS[@]}"; do [[ " ${archs[*]} " == *" ${run%% *} "* ]] || archs+=("${run%% *}"); done
  in_slots dense_job "${archs[@]}" || die "a dense model failed; nothing was pruned"
  in_slots prune_job "${RUNS[@]}" || die "some runs failed (listed above); re-run the same command to retry them"
  echo "$SWEEP: all ${#RUNS[@]} runs finished. Tables and plots: $PYTHON -m experiment.aggregate $ROOT --out DIR"
}
