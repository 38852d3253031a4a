#!/usr/bin/env bash
# Issue 11's real-GPU check, in one pass on the device machine (NVIDIA H200, Vulkan),
# all results into $OUT. Prepared here by bench/gpu/prepare_real_gpu.sh; run there with
#   run(command="bash bench/gpu/real_gpu.sh", carry=[".gpucarry", ".whl", ".gl"],
#       timeout_s=540)
# Stages (each bounded by its own timeout; the whole ends within ~8 minutes):
#   1. the GPU tests (the delegates crate's test binary, `gpu::` tests) on the real GPU
#   2. per float model: the optimized CPU kernels at the machine's full thread count,
#      and `switchyard bench --device gpu` in fp32 (cold pipeline cache, then reloaded
#      from it) and fp16 (cold): latency, compile time, dispatches, per-dispatch profile
#   3. LiteRT on the same machine: XNNPACK and the GPU accelerator (ML Drift over
#      WebGPU/Dawn): load and run times, fully accelerated or not, error vs XNNPACK
#   4. switchyardd on every float model: first load (the allowlist validates fp32 and
#      fp16 on the GPU against the CPU reference and picks), run_us of 10 requests,
#      the daemon's placement, the allowlist (fp32/fp16 errors); then SIGTERM, exit
#      status and log (no crash at shutdown), and the outputs against XNNPACK
#   5. summary.md / summary.json
# $OUT gets at most 8 files: log.txt, summary.md, summary.json, results.tgz (every raw
# file, refreshed after each stage so a timeout still returns what finished).
#
# Dry run on a machine without the NVIDIA driver (lavapipe):
#   REAL_GPU_DRY_RUN=1 RUNS=3 PYTHON=.venv/bin/python OUT=/tmp/real_gpu_out \
#       bash bench/gpu/real_gpu.sh
# (no .deb unpacking into /, LiteRT from the given Python, 3 timed runs instead of 50;
# LiteRT's GPU accelerator refuses lavapipe and is recorded as failing.)
set -u
T0=$SECONDS
OUT=${OUT:-/tmp/real_gpu_out}
mkdir -p "$OUT"
W=/tmp/real_gpu_work
rm -rf "$W"
mkdir -p "$W"/raw
RAW=$W/raw
LOG=$OUT/log.txt
: >"$LOG"
say() { echo "== [$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
pack() { tar -C "$W" -czf "$OUT/results.tgz" raw 2>/dev/null; }
DRY=${REAL_GPU_DRY_RUN:-0}
# Timed runs per bench (50 on the GPU machine; a few for a dry run on lavapipe).
RUNS=${RUNS:-50}
CPU_RUNS=$(( RUNS < 30 ? RUNS : 30 ))
REPO=$PWD

say "setup (dry run: $DRY)"
if [ "$DRY" != 1 ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || say "pip install failed"
    export PYTHONPATH=/tmp/site
fi
PYTHON=${PYTHON:-python3}
# First compiles must be cold: no driver-side shader cache.
export __GL_SHADER_DISK_CACHE=0
NPROC=$(nproc)
(nvidia-smi; nvidia-smi -q | head -40) >"$RAW/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$RAW/nvidia-smi.txt"
BIN=$W/bin
mkdir -p "$BIN"
tar -C "$BIN" -xJf .gpucarry/bin.tar.xz
SY=$BIN/switchyard
SYD=$BIN/switchyardd
# The test binary finds models/ and golden/ under the repository root it was built in.
# (The tree arrives without its ignored models/ and golden/, wherever it lands.)
BUILT_ROOT=$(cat .gpucarry/repo_root)
mkdir -p "$BUILT_ROOT"
[ -e "$BUILT_ROOT/models" ] || ln -sfn "$REPO/.gpucarry/models" "$BUILT_ROOT/models"
[ -e "$BUILT_ROOT/golden" ] || ln -sfn "$REPO/.gpucarry/golden" "$BUILT_ROOT/golden"
MODELS=$W/models
mkdir -p "$MODELS"
cp .gpucarry/models/*.tflite "$MODELS/"
cp scripts/gen_models/tflite/gen_mobilenetv2_035_96_float.tflite "$MODELS/"
INPUTS=$REPO/.gpucarry/golden
FLOAT="mp_pose_detection mp_selfie_segmentation mp_hand_landmark_lite mp_iris_landmark mp_face_detection_short_range oww_embedding_model gen_mobilenetv2_035_96_float"
inputs_of() { ls "$INPUTS/$1"/input_*.npy | sort -V | paste -sd, -; }
"$SY" bench "$MODELS/oww_embedding_model.tflite" --local --device gpu --runs 1 --warmup 0 --no-profile \
    >"$RAW/adapter.txt" 2>&1
say "adapter: $(grep -v XDG_RUNTIME_DIR "$RAW/adapter.txt" | head -1)"
pack

say "1. GPU tests"
timeout 170 "$BIN/gpu-tests" gpu:: --test-threads "$NPROC" >"$RAW/gpu_tests.txt" 2>&1
echo "exit $?" >>"$RAW/gpu_tests.txt"
say "GPU tests: $(grep -E '^test result' "$RAW/gpu_tests.txt" | tail -1) ($(tail -1 "$RAW/gpu_tests.txt"))"
pack

say "2. CPU (optimized, $NPROC threads) and GPU benches"
mkdir -p "$RAW/bench"
for m in $FLOAT; do
    M=$MODELS/$m.tflite
    IN=$(inputs_of "$m")
    timeout 60 "$SY" bench "$M" --local --threads "$NPROC" --runs "$CPU_RUNS" --warmup 5 --no-profile --json \
        --inputs "$IN" >"$RAW/bench/cpu_$m.json" 2>"$RAW/bench/cpu_$m.err"
    rm -rf "$W/cache_$m" "$W/cache16_$m"
    timeout 90 "$SY" bench "$M" --local --device gpu --threads "$NPROC" --runs "$RUNS" --json \
        --inputs "$IN" --gpu-cache "$W/cache_$m" >"$RAW/bench/gpu32_cold_$m.json" 2>"$RAW/bench/gpu32_cold_$m.err"
    timeout 90 "$SY" bench "$M" --local --device gpu --threads "$NPROC" --runs "$RUNS" --json \
        --inputs "$IN" --gpu-cache "$W/cache_$m" >"$RAW/bench/gpu32_cached_$m.json" 2>"$RAW/bench/gpu32_cached_$m.err"
    timeout 90 "$SY" bench "$M" --local --device gpu --precision fp16 --threads "$NPROC" --runs "$RUNS" --json \
        --inputs "$IN" --gpu-cache "$W/cache16_$m" >"$RAW/bench/gpu16_cold_$m.json" 2>"$RAW/bench/gpu16_cold_$m.err"
    say "bench $m: $("$PYTHON" - "$RAW/bench" "$m" <<'EOF'
import json, sys, pathlib
d, m = pathlib.Path(sys.argv[1]), sys.argv[2]
def get(name, key):
    try:
        return json.loads((d / f"{name}_{m}.json").read_text())[key]
    except Exception:
        return None
print("cpu", get("cpu", "median_ms"), "ms; gpu fp32", get("gpu32_cold", "median_ms"), "ms, fp16",
      get("gpu16_cold", "median_ms"), "ms; compile cold", get("gpu32_cold", "gpu_compile_ms"),
      "ms, cached", get("gpu32_cached", "gpu_compile_ms"), "ms")
EOF
)"
done
pack

say "3. LiteRT: XNNPACK and its GPU accelerator"
MLIST=$(for m in $FLOAT; do printf '%s,' "$MODELS/$m.tflite"; done)
timeout 150 "$PYTHON" bench/gpu/litert_gpu.py --models "${MLIST%,}" --inputs "$INPUTS" \
    --threads "$NPROC" --runs "$RUNS" --accel gpu --out "$RAW/litert.json" >"$RAW/litert.txt" 2>&1
say "LiteRT done (exit $?)"
pack

say "4. switchyardd on every float model"
D=$W/daemon
mkdir -p "$D/run" "$RAW/daemon" "$W/ours"
SOCK=$D/run/switchyard.sock
write_config() {
    cat >"$D/switchyard.toml" <<EOF
[daemon]
socket = "$SOCK"
state_dir = "$D/state"
grace_ms = 5000
$1
[scheduler]
partition_timeout_ms = 20000
[devices.dsp]
enabled = false
[devices.npu]
enabled = false
EOF
}
start_daemon() {
    SWITCHYARD_LOG=info "$SYD" --config "$D/switchyard.toml" >"$RAW/daemon/daemon.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 300); do
        [ -S "$SOCK" ] && return 0
        kill -0 "$DPID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
write_config "kernel_threads = $NPROC"
if ! start_daemon; then
    say "daemon refused the config with kernel_threads; starting with the defaults"
    wait "$DPID" 2>/dev/null
    write_config ""
    start_daemon || say "daemon did not start"
fi
DAEMON_T0=$SECONDS
for m in $FLOAT; do
    [ $((SECONDS - DAEMON_T0)) -lt 170 ] || { say "daemon stage out of time before $m"; break; }
    M=$MODELS/$m.tflite
    IN=$(inputs_of "$m")
    t=$EPOCHREALTIME
    timeout 90 "$SY" run "$M" --inputs "$IN" --out "$W/ours/$m" --keep --json --socket "$SOCK" \
        >"$RAW/daemon/${m}_first.json" 2>"$RAW/daemon/${m}_first.err"
    echo "{\"first_request_s\": $(awk "BEGIN { print $EPOCHREALTIME - $t }")}" >"$RAW/daemon/${m}_load.json"
    for i in $(seq 1 $(( RUNS < 10 ? RUNS : 10 ))); do
        timeout 20 "$SY" run "$M" --inputs "$IN" --out "$W/ours/$m" --keep --json --socket "$SOCK" \
            >"$RAW/daemon/${m}_run$i.json" 2>>"$RAW/daemon/${m}_runs.err"
    done
    timeout 30 "$SY" placement "$M" --socket "$SOCK" --json >"$RAW/daemon/${m}_placement.json" 2>&1
    say "daemon $m: first request $(cat "$RAW/daemon/${m}_load.json"), run_us $(cat "$RAW/daemon/${m}"_run*.json 2>/dev/null | grep -o '"run_us": [0-9]*' | cut -d' ' -f2 | sort -n | paste -sd' ' -)"
done
timeout 20 "$SY" allowlist --json --socket "$SOCK" >"$RAW/daemon/allowlist.json" 2>&1
timeout 20 "$SY" allowlist --socket "$SOCK" >"$RAW/daemon/allowlist.txt" 2>&1
kill -TERM "$DPID" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
wait "$DPID"
echo "{\"exit_status\": $?}" >"$RAW/daemon/shutdown.json"
say "daemon exit status after SIGTERM: $(cat "$RAW/daemon/shutdown.json") ($(grep -c 'GPU closed' "$RAW/daemon/daemon.log") 'GPU closed', $(grep -c 'GPU device released' "$RAW/daemon/daemon.log") 'GPU device released')"
pack

say "5. errors of the daemon's outputs vs XNNPACK, summary"
timeout 60 "$PYTHON" bench/gpu/litert_gpu.py --models "${MLIST%,}" --inputs "$INPUTS" \
    --threads "$NPROC" --runs 3 --accel cpu --ours "$W/ours" --out "$RAW/ours_vs_xnnpack.json" \
    >"$RAW/ours_vs_xnnpack.txt" 2>&1
"$PYTHON" bench/gpu/summarize.py "$RAW" "$OUT" "$MODELS" >>"$LOG" 2>&1 || say "summary failed"
pack

# 6. Issue 12 on a 16-core machine: the optimized CPU kernels against LiteRT-XNNPACK at 4
# and 8 threads over the whole benchmark set (bench/compare_litert.py, same run), in the
# time this call has left. compare_litert.py reads models/ and golden/ at the repository
# root, which the tree arrives without.
LEFT=$((530 - (SECONDS - T0)))
if [ "$LEFT" -gt 60 ]; then
    say "6. CPU 4 and 8 threads vs XNNPACK, whole benchmark set (${LEFT}s left)"
    mkdir -p "$REPO/models"
    cp .gpucarry/models/*.tflite scripts/gen_models/tflite/*.tflite "$REPO/models/" 2>/dev/null
    [ -e "$REPO/golden" ] || ln -sfn "$REPO/.gpucarry/golden" "$REPO/golden"
    PYTHONUNBUFFERED=1 timeout "$LEFT" "$PYTHON" bench/compare_litert.py --threads 4,8 --runs 20 --warmup 5 \
        --repeat 1 --binary "$SY" --json "$OUT/cpu_threads.json" >"$RAW/cpu_threads.txt" 2>&1
    say "compare_litert exit $?: $(grep -i geomean "$RAW/cpu_threads.txt" | tr '\n' ' ')"
    cp "$RAW/cpu_threads.txt" "$OUT/" 2>/dev/null
    pack
else
    say "6. skipped: ${LEFT}s left"
fi
say "done"
