#!/usr/bin/env bash
# The GPU checks and benchmarks of the fast-inference work in one go, each step time-boxed, every
# result under the directory given as the first argument: GPU tests (lane pools, graphs per batch
# size, kernels in bf16), the daemon's model step per batch size, the daemon under 1 and 8 live
# 512x288 streams, wan-1.3b-shape at LongLive's settings, and the kernel/graph/compile arms on
# small (compile last: the time box may cut it; its JSON keeps what was measured).
#
#   bash bench/gpu_suite.sh "$OUT"        # at most about 8 minutes (the sum of the time boxes)
set -u
out=${1:?usage: bash bench/gpu_suite.sh OUTPUT_DIR}
mkdir -p "$out"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, note the exit code
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$out/steps.jsonl"
    tail -n 25 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/device.csv" 2>&1
git rev-parse HEAD > "$out/commit.txt" 2>/dev/null
step gpu_tests 120 python -m pytest -q -p no:cacheprovider tests/kernels/test_gpu.py tests/kernels/test_lanes.py tests/daemon/test_gpu_daemon.py \
    --junitxml="$out/gpu_tests.xml"
step daemon_step 45 python bench/daemon_step.py --preset tiny --size 512x288 --batches 1,2,4,8 --frames 60 \
    --out "$out/daemon_step.json"
step load_1 40 python bench/load.py --sessions 1 --seconds 12 --warmup 2 --pipeline generator --device cuda \
    --json "$out/load_1.json"
step load_8 50 python bench/load.py --sessions 8 --client-procs 4 --seconds 12 --warmup 3 --pipeline generator --device cuda --port 50152 \
    --json "$out/load_8.json"
step longlive 100 python bench/longlive_shape.py --chunks 6 --out "$out/longlive.json"
step kernels 140 python bench/kernels.py --cases small:512x288,tiny:512x288 --frames 100 --warmup 10 --no-micro \
    --budget-s 60 --out "$out/kernels.json"
echo "done: $out"
