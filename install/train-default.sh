#!/usr/bin/env bash
# Train the default `tiny` model on one GPU within a time budget: the autoencoder, then the
# denoiser from it, each on synthetic clips from a device-side pool.
#
#   install/train-default.sh OUT_DIR [AE_SECONDS] [DENOISER_SECONDS] [FROM] [DENOISER FLAG...]
#
# FROM (a model file or run folder of the same recipe, e.g. model/weights/tiny.safetensors) with
# AE_SECONDS 0 skips the autoencoder stage and trains the denoiser on from FROM's weights (a new
# optimizer and schedule), to add training time to a model across several GPU sessions.
# Flags after FROM (pass "" as FROM for a fresh run) go to the denoiser stage after the recipe's
# own, e.g. --still-prob 0.1 --style-weight "comic=2".
#
# Each stage is first timed for a few dozen steps, and its step count is then set so the run
# ends inside its budget with the learning-rate schedule completed. Both runs are resumable
# (`morphcam train STAGE ... --out OUT_DIR/STAGE --resume` with the same flags, which the log
# OUT_DIR/commands.txt records). The result is OUT_DIR/dn/model.safetensors, and beside it
# OUT_DIR/dn/best.safetensors, the export at the lowest held-out loss (log.jsonl flags that eval "best").
set -euo pipefail
shopt -s inherit_errexit

out=${1:?usage: install/train-default.sh OUT_DIR [AE_SECONDS] [DENOISER_SECONDS]}
ae_s=${2:-330}
dn_s=${3:-630}
from=${4:-}
dn_extra=("${@:5}")
morphcam=${MORPHCAM:-morphcam}
if [[ $ae_s == 0 && -z $from ]] || [[ $ae_s != 0 && -n $from ]]; then
  echo "train-default.sh: pass FROM together with AE_SECONDS 0 (train the denoiser on from FROM), or neither" >&2
  exit 2
fi
mkdir -p "$out"

common=(--device cuda --preset tiny --ae-skip --size 256x144 --frames 8 --log-interval 50 --quiet)
ae_flags=(--batch 32 --lr 1e-3 --ema 0.995 --pool 2048 --pool-refresh 8)
# The denoiser's step is bound by kernel launches at 32 clips (~16k ops per forward, the GPU idle
# most of the step), so a larger batch costs little more time per step: 96 clips.
# --compile: torch.compile fuses the step's elementwise kernels (0.15 against 0.33 s per step on an H200).
dn_flags=(--batch 96 --lr 7e-4 --ema 0.999 --pool 2048 --pool-refresh 12 --sampler-prob 0.5 --history-prob 0.5 --compile
          ${dn_extra[@]+"${dn_extra[@]}"})

# Seconds per step of a stage: the last logged interval of a short run (after its pool filled).
seconds_per_step() {
  local stage=$1; shift
  local dir
  dir=$(mktemp -d)
  "$morphcam" train "$stage" "${common[@]}" "$@" --steps 120 --warmup 10 --pool 256 \
    --log-interval 40 --eval-batches 0 --ckpt-interval 100000 --out "$dir/run" >/dev/null
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"train\"' in l]; print(r[-1]['s_per_step'])" \
    "$dir/run/log.jsonl"
  rm -rf "$dir"
}

steps_for() {  # budget seconds, seconds per step, seconds held back for filling the pool and saving
  python3 -c "import sys; b, s, f = map(float, sys.argv[1:]); print(max(100, int((b - f) / s)))" "$1" "$2" "$3"
}

if [[ -z $from ]]; then
  ae_sps=$(seconds_per_step autoencoder "${ae_flags[@]}") || { echo "timing the autoencoder failed" >&2; exit 1; }
  ae_steps=$(steps_for "$ae_s" "$ae_sps" 30)
  echo "autoencoder: ${ae_sps} s/step -> ${ae_steps} steps" | tee -a "$out/commands.txt"
  cmd=("$morphcam" train autoencoder "${common[@]}" "${ae_flags[@]}" --steps "$ae_steps" --warmup 200
       --eval-interval 500 --ckpt-interval 500 --out "$out/ae" --resume)
  printf '%q ' "${cmd[@]}" >>"$out/commands.txt"; echo >>"$out/commands.txt"
  "${cmd[@]}"
  from=$out/ae/model.safetensors
fi

dn_sps=$(seconds_per_step denoiser "${dn_flags[@]}" --init "$from") ||
  { echo "timing the denoiser failed" >&2; exit 1; }
# Held back: filling the pool, the first step's compiling, and saving.
dn_steps=$(steps_for "$dn_s" "$dn_sps" 165)
echo "denoiser: ${dn_sps} s/step -> ${dn_steps} steps" | tee -a "$out/commands.txt"
cmd=("$morphcam" train denoiser "${common[@]}" "${dn_flags[@]}" --init "$from"
     --steps "$dn_steps" --warmup 300 --eval-interval 500 --ckpt-interval 500 --out "$out/dn" --resume)
printf '%q ' "${cmd[@]}" >>"$out/commands.txt"; echo >>"$out/commands.txt"
"${cmd[@]}"
echo "done: $out/dn/model.safetensors (the EMA at the end); $out/dn/best.safetensors (at the lowest eval loss)" |
  tee -a "$out/commands.txt"
