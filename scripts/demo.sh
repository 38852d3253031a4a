#!/usr/bin/env bash
# The README's main job: build, start switchyardd on its embedded defaults, run two
# client apps at once against it — a 30 fps camera app (shared-memory frames) and a
# wake-word app (inline audio windows) — print their latencies and the daemon's status,
# then shut the daemon down cleanly (SIGTERM: stop accepting, drain, exit 0).
#
#   scripts/demo.sh [SECONDS]        (PROFILE=dev for a faster, unoptimised build)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-10}"
PROFILE="${PROFILE:-release}"

[ -d models ] && [ -d golden ] || scripts/setup.sh

echo "== build ($PROFILE)"
cargo build --profile "$PROFILE" -p switchyard-daemon -p switchyard-cli \
  -p switchyard-client --examples --bins
dir="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

# The embedded default socket is /run/switchyard/switchyard.sock; without root, put it
# in a private directory instead (everything else stays on the embedded defaults).
if [ -z "${SWITCHYARD_SOCKET:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    SWITCHYARD_SOCKET=/run/switchyard/switchyard.sock
  else
    SWITCHYARD_SOCKET="${XDG_RUNTIME_DIR:-/tmp}/switchyard-$(id -u)/switchyard.sock"
  fi
fi
export SWITCHYARD_SOCKET

# Pick the first model of each app that this build's CPU kernels can run.
runnable() {
  for stem in "$@"; do
    ins=$(ls golden/"$stem"/input_*.npy 2>/dev/null | paste -sd, -)
    if [ -n "$ins" ] && "$dir/switchyard" run --local "models/$stem.tflite" --inputs "$ins" \
         --out "$(mktemp -d)" >/dev/null 2>&1; then
      echo "$stem"; return 0
    fi
  done
  return 1
}
camera_model=$(runnable mp_face_detection_short_range mp_selfie_segmentation oww_embedding_model)
wake_model=$(runnable mww_okay_nabu oww_hey_jarvis oww_embedding_model)
echo "== camera app model: $camera_model; wake-word app model: $wake_model"

echo "== start switchyardd (embedded defaults, socket $SWITCHYARD_SOCKET)"
"$dir/switchyardd" --socket "$SWITCHYARD_SOCKET" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S "$SWITCHYARD_SOCKET" ] && break; sleep 0.05; done

echo "== two apps at once for ${SECONDS_TO_RUN}s"
"$dir/examples/camera_app" "$SWITCHYARD_SOCKET" "models/$camera_model.tflite" "$SECONDS_TO_RUN" &
cam=$!
"$dir/examples/wake_word" "$SWITCHYARD_SOCKET" "models/$wake_model.tflite" "$SECONDS_TO_RUN" &
wake=$!
wait "$cam"
wait "$wake"

echo "== switchyard status"
"$dir/switchyard" status
echo "== switchyard models"
"$dir/switchyard" models

echo "== shutdown (SIGTERM)"
kill -TERM "$daemon"
code=0
wait "$daemon" || code=$?
trap - EXIT
echo "switchyardd exited with status $code"
[ "$code" = 0 ]
