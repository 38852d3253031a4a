#!/usr/bin/env bash
# Builds and gathers, here, what bench/gpu/real_gpu.sh needs on the real-GPU machine
# (issue 11), in three git-ignored folders at the repository root, and checks that the
# working tree plus them stays under the device tool's 64 MiB:
#
#   .gpucarry/bin.tar.xz   stripped release switchyardd and switchyard, and the
#                          delegates crate's test binary (the GPU tests), xz-compressed
#   .gpucarry/models/      the float models (MobileNetV2 travels as a tracked file)
#   .gpucarry/golden/      their LiteRT golden inputs (input_<i>.npy)
#   .gpucarry/repo_root    where the test binary looks for models/ and golden/
#   .whl/                  ai-edge-litert 2.3.0 for CPython 3.12, and backports.strenum
#                          (numpy, flatbuffers, protobuf, tqdm, ml_dtypes are on the image)
#   .gl/                   the Vulkan loader and GL .debs (bench/gpu/real_gpu.sh unpacks
#                          them into /)
#
# Then, on the device (one call, ~5 min of its 15):
#   run(command="bash bench/gpu/real_gpu.sh", carry=[".gpucarry", ".whl", ".gl"],
#       timeout_s=540)
#
# Needs network here (pip, apt) and a built workspace; takes a while (release build).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
ROOT=$PWD
LIMIT=$((64 * 1024 * 1024))

exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for p in /.gl/ /.whl/ /.gpucarry/; do
    grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"
done

# REAL_GPU_PROFILE=debug takes the dev-profile binaries instead (dry runs here).
PROFILE=${REAL_GPU_PROFILE:-release}
echo "== $PROFILE binaries"
if [ "$PROFILE" = release ]; then
    cargo build --release -p switchyard-daemon -p switchyard-cli
else
    cargo build -p switchyard-daemon -p switchyard-cli
fi
echo "== the GPU test binary (dev profile: our code at opt-level 1, dependencies at 3)"
test_bin=$(cargo test -p switchyard-delegates --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "switchyard_delegates":
        print(m["executable"])' | tail -1)
[ -x "$test_bin" ] || { echo "no test binary found" >&2; exit 1; }

rm -rf .gpucarry && mkdir -p .gpucarry/stage .gpucarry/models .gpucarry/golden
cp "target/$PROFILE/switchyardd" "target/$PROFILE/switchyard" .gpucarry/stage/
cp "$test_bin" .gpucarry/stage/gpu-tests
strip .gpucarry/stage/*
tar -C .gpucarry/stage -cJf .gpucarry/bin.tar.xz switchyardd switchyard gpu-tests
rm -rf .gpucarry/stage
echo "$ROOT" >.gpucarry/repo_root

echo "== models and golden inputs"
# Every model of the benchmark set: the GPU stages use the float ones, stage 6 (CPU
# threads 4 and 8 against XNNPACK, issue 12) all of them. The converter-made gen_* models
# are tracked under scripts/gen_models/tflite/ and travel with the tree.
for f in models/*.tflite; do
    case "$(basename "$f")" in gen_*) continue ;; esac
    cp -L "$f" .gpucarry/models/
done
for d in golden/*/; do
    m=$(basename "$d")
    ls "$d"input_*.npy >/dev/null 2>&1 || continue
    mkdir -p ".gpucarry/golden/$m"
    cp "$d"input_*.npy ".gpucarry/golden/$m/"
done

echo "== wheels (CPython 3.12, manylinux)"
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    ai-edge-litert==2.3.0 backports.strenum==1.2.8

echo "== Vulkan loader .debs"
rm -rf .gl && mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
# shellcheck disable=SC2086
apt-get $o update -qq
# shellcheck disable=SC2086
(cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

echo "== size"
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$( (git ls-files -z -o --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1) || echo 0)
carried=$(du -cb .gpucarry .whl .gl | tail -1 | cut -f1)
total=$((tracked + ${untracked:-0} + carried))
du -sh .gpucarry/* .whl .gl
printf 'tracked %d + untracked %d + carried %d = %d bytes (%.1f MiB of 64)\n' \
    "$tracked" "${untracked:-0}" "$carried" "$total" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -ge "$LIMIT" ]; then
    echo "over the 64 MiB the device tool carries" >&2
    exit 1
fi
echo "ready: run(command=\"bash bench/gpu/real_gpu.sh\", carry=[\".gpucarry\", \".whl\", \".gl\"], timeout_s=540)"
