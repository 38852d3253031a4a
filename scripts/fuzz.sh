#!/usr/bin/env bash
# Fuzzes the daemon's untrusted inputs with cargo-fuzz (libFuzzer): the model loader and
# verifier, prepare+run of mutated models, gRPC request decoding, the shm side socket.
#
#   scripts/fuzz.sh [MINUTES] [TARGET...]     # default: 30 minutes per target, all four
#
# A crash is a panic, an abort, one input taking over 10 s, or over 2 GiB of RSS. Crash
# inputs land in fuzz/artifacts/<target>/; commit them with the fix: the CI replay
# (daemon/tests/fuzz_replay.rs) runs every file there through the same target.
# Seeds: fuzz/corpus/<target>/ (committed), plus the single-op models of every operator
# and the real models in models/, written by the replay test's `write_seeds`.
# Nightly Rust gets AddressSanitizer; with stable only, `-s none` and debug assertions.
# Summary (executions, crashes per target) in fuzz/work/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(model run grpc_request shm_side)

command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 2; }
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz run --fuzz-dir fuzz --release --debug-assertions)
else
  FUZZ=(cargo fuzz run --fuzz-dir fuzz -s none --release --debug-assertions)
fi

WORK=fuzz/work
# Two instances on disjoint targets may run at once, each with its own summary file.
SUMMARY=${FUZZ_SUMMARY:-$WORK/summary.txt}
mkdir -p "$WORK"
echo "writing seeds from the single-op and real models"
SWITCHYARD_FUZZ_SEEDS="$PWD/$WORK/seeds" \
  cargo test -q -p switchyard-daemon --test fuzz_replay write_seeds -- --ignored >/dev/null

: > "$SUMMARY"
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/$t" "fuzz/artifacts/$t"
  seeds=("$PWD/fuzz/corpus/$t")
  [ -d "$WORK/seeds/$t" ] && seeds+=("$PWD/$WORK/seeds/$t")
  log="$WORK/$t.log"
  echo "fuzzing $t for $MINUTES min (log: $log)"
  # The first corpus directory is where libFuzzer adds what it finds; the committed
  # seeds are only read.
  if ! "${FUZZ[@]}" "$t" "$PWD/$WORK/$t" "${seeds[@]}" -- \
        -max_total_time=$((MINUTES * 60)) -timeout=10 -rss_limit_mb=2048 \
        -max_len=8388608 -artifact_prefix="$PWD/fuzz/artifacts/$t/" \
        -print_final_stats=1 >"$log" 2>&1; then
    status=1
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  crashes=$(find "fuzz/artifacts/$t" -newer "$SUMMARY" -type f | wc -l)
  echo "$t: ${runs:-?} executions in $MINUTES min, $crashes new crash inputs" | tee -a "$SUMMARY"
done
exit $status
