#!/usr/bin/env python3
"""Switchyard vs LiteRT (XNNPACK) on the same models and inputs, in the same run.

For each model and thread count, runs LiteRT as it ships (XNNPACK delegate on,
num_threads=N) and `switchyard bench --local --threads N` (optimized CPU kernels), each in
a fresh process, interleaved R times so that drifting machine load hits both alike.
Both get the same inputs: golden/<stem>/input_<i>.npy (made by scripts/make_golden.py).

Reports, per model and thread count (median over the R repeats):
  latency   median and p90 of `runs` timed invokes after `warmup` untimed ones;
            ratio = switchyard / litert (below 1.0: Switchyard is faster)
  load      LiteRT: Interpreter() + allocate_tensors() (XNNPACK packs weights here);
            Switchyard: model load + prepare (folding, packing, arena planning)
  memory    LiteRT has no public arena-size API, so both runtimes are compared on one
            measure: the process's peak RSS (VmHWM) at the end minus its peak RSS just
            before the model is loaded (for LiteRT with numpy and LiteRT imported and the
            inputs read). It covers arena, packed weights and runtime buffers. Switchyard
            also reports its arena (activations) bytes exactly.
Tiny models are timed over batches of invokes on both sides: each timed sample is B
invokes back to back divided by B, B chosen once per model and thread count so that a
batch takes about --batch-ms on LiteRT (1 for models slower than that). Otherwise the
Python call around each LiteRT invoke (a few microseconds) would count against LiteRT on
models that run in microseconds.
Then the geometric mean of the ratios per thread count, over all models run and over
the five models of the issue's baseline. "min r" is the ratio of the fastest runs: on a
machine shared with other work the median includes time the process spent descheduled
(longer runs are preempted more often), and the minimum shows the kernels' own speed.

usage: .venv/bin/python bench/compare_litert.py [--models a.tflite ...] [--threads 1,2]
           [--runs 50] [--warmup 10] [--repeat 3] [--batch-ms 2] [--json out.json]
Needs a release build first: cargo build --release -p switchyard-cli
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = [
    "mp_face_detection_short_range.tflite",
    "mp_hand_landmark_lite.tflite",
    "mp_iris_landmark.tflite",
    "mp_pose_detection.tflite",
    "oww_embedding_model.tflite",
    "mp_selfie_segmentation.tflite",
    "oww_melspectrogram.tflite",
    "oww_hey_jarvis.tflite",
    "mww_okay_nabu.tflite",
    "tfm_sine_float.tflite",
    # issue 12's benchmark set: real int8 models from pinned wheels
    "mww_alexa.tflite",
    "mww_hey_jarvis.tflite",
    "mww_hey_mycroft.tflite",
    "helia_tiny_cnn_int8.tflite",
    # ... and converter-made families from scripts/gen_models/ (committed, sha256-pinned)
    "gen_mobilenetv2_035_96_float.tflite",
    "gen_mobilenetv2_035_96_int8.tflite",
    "gen_mobilenetv2_035_96_dynamic.tflite",
    "gen_lstm_float.tflite",
    "gen_lstm_int8.tflite",
    "gen_lstm_dynamic.tflite",
    "gen_gru_float.tflite",
    "gen_gru_unrolled_int8.tflite",
    "gen_transformer_float.tflite",
    "gen_transformer_int8.tflite",
]
# The baseline set (XNNPACK, 1 thread, median ms on the 2-core build machine).
BASELINE = {
    "mp_face_detection_short_range": 1.24,
    "mp_hand_landmark_lite": 4.60,
    "mp_iris_landmark": 1.45,
    "mp_pose_detection": 12.5,
    "oww_embedding_model": 1.05,
}


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def golden_inputs(path):
    d = os.path.join(ROOT, "golden", stem(path))
    files = []
    i = 0
    while os.path.exists(os.path.join(d, f"input_{i}.npy")):
        files.append(os.path.join(d, f"input_{i}.npy"))
        i += 1
    if not files:
        sys.exit(f"no golden inputs in {d}: run scripts/setup.sh")
    return files


def peak_rss_mb():
    """VmHWM: this process's own peak RSS. (getrusage's ru_maxrss would also carry the
    high-water mark of the parent that forked it, which exec does not reset.)"""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def litert_child(path, threads, runs, warmup, batch, batch_ms):
    """In a fresh process: LiteRT with its default delegate (XNNPACK), timing invoke().
    batch 0: choose it here (see the module doc) and report it."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    xs = [np.load(p) for p in golden_inputs(path)]
    rss_base = peak_rss_mb()
    t0 = time.perf_counter()
    it = Interpreter(model_path=path, num_threads=threads)
    for d, x in zip(it.get_input_details(), xs):
        if tuple(d["shape"]) != x.shape:
            it.resize_tensor_input(d["index"], x.shape, strict=False)
    it.allocate_tensors()
    load_ms = (time.perf_counter() - t0) * 1e3
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    for _ in range(max(warmup, 1)):
        it.invoke()
    if batch <= 0:
        probe = []
        for _ in range(10):
            t0 = time.perf_counter_ns()
            it.invoke()
            probe.append((time.perf_counter_ns() - t0) / 1e6)
        batch = max(1, min(1000, math.ceil(batch_ms / max(min(probe), 1e-4))))
    invoke = it.invoke
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            invoke()
        ts.append((time.perf_counter_ns() - t0) / 1e6 / batch)
    ts.sort()
    return dict(median_ms=statistics.median(ts), p90_ms=ts[int(round(0.9 * (len(ts) - 1)))],
                min_ms=ts[0], load_ms=load_ms, rss_delta_mb=peak_rss_mb() - rss_base,
                batch=batch)


def run_measured(cmd):
    """Runs cmd in a fresh process and returns its stdout."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return p.stdout


def litert(path, threads, runs, warmup, batch, batch_ms):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path, str(threads),
           "--runs", str(runs), "--warmup", str(warmup), "--batch", str(batch),
           "--batch-ms", str(batch_ms)]
    out = run_measured(cmd)
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def switchyard(binary, path, threads, runs, warmup, batch):
    cmd = [binary, "bench", path, "--local", "--threads", str(threads), "--runs", str(runs),
           "--warmup", str(warmup), "--batch", str(batch), "--json", "--no-profile",
           "--inputs", ",".join(golden_inputs(path))]
    out = run_measured(cmd)
    r = json.loads(out)
    delta = float("nan")
    if r.get("rss_peak_bytes") is not None and r.get("rss_before_load_bytes") is not None:
        delta = (r["rss_peak_bytes"] - r["rss_before_load_bytes"]) / 2**20
    return dict(median_ms=r["median_ms"], p90_ms=r["p90_ms"], min_ms=r["min_ms"],
                load_ms=r["load_ms"],
                arena_bytes=r["arena_bytes"], heap_bytes=r["heap_bytes"], rss_delta_mb=delta)


def geomean(xs):
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0,
                    help="invokes per timed sample on both sides (0: chosen per model)")
    ap.add_argument("--batch-ms", type=float, default=2.0,
                    help="target LiteRT time of one batch when --batch is 0")
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "switchyard"))
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "THREADS"))
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(litert_child(a.child[0], int(a.child[1]), a.runs, a.warmup,
                                                  a.batch, a.batch_ms)))
        return
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} missing: run cargo build --release -p switchyard-cli")
    import ai_edge_litert
    models = a.models or [os.path.join(ROOT, "models", m) for m in MODELS]
    print(f"LiteRT {getattr(ai_edge_litert, '__version__', '?')} (XNNPACK) vs {a.binary}; "
          f"{a.runs} runs after {a.warmup} warm-up, median of {a.repeat} interleaved repeats; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    print(f"{'model':<31} {'thr':>3} {'batch':>5} {'litert ms':>9} {'p90':>7} {'switchyard ms':>13} {'p90':>7} "
          f"{'ratio':>6} {'min r':>6} {'load lt/sy ms':>15} {'rss+ lt/sy MB':>14} {'sy arena KiB':>12}",
          flush=True)
    rows, failed = [], []
    for path in models:
        for th in [int(t) for t in a.threads.split(",")]:
            lt, sy = [], []
            batch = a.batch
            try:
                for _ in range(a.repeat):
                    lt.append(litert(path, th, a.runs, a.warmup, batch, a.batch_ms))
                    batch = lt[0]["batch"]
                    sy.append(switchyard(a.binary, path, th, a.runs, a.warmup, batch))
            except RuntimeError as e:
                print(f"{stem(path):<31} {th:>3} failed, left out of the means: {e}", flush=True)
                failed.append(dict(model=stem(path), threads=th, error=str(e)))
                continue
            med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
            row = dict(model=stem(path), threads=th, batch=batch,
                       litert_ms=med(lt, "median_ms"), switchyard_ms=med(sy, "median_ms"),
                       litert_p90_ms=med(lt, "p90_ms"), switchyard_p90_ms=med(sy, "p90_ms"),
                       litert_min_ms=min(r["min_ms"] for r in lt),
                       switchyard_min_ms=min(r["min_ms"] for r in sy),
                       litert_load_ms=med(lt, "load_ms"), switchyard_load_ms=med(sy, "load_ms"),
                       litert_rss_delta_mb=med(lt, "rss_delta_mb"),
                       switchyard_rss_delta_mb=med(sy, "rss_delta_mb"),
                       switchyard_arena_bytes=sy[0]["arena_bytes"],
                       switchyard_heap_bytes=sy[0]["heap_bytes"])
            row["ratio"] = row["switchyard_ms"] / row["litert_ms"]
            row["min_ratio"] = row["switchyard_min_ms"] / row["litert_min_ms"]
            rows.append(row)
            print(f"{row['model']:<31} {th:>3} {batch:>5} {row['litert_ms']:>9.3f} {row['litert_p90_ms']:>7.3f} "
                  f"{row['switchyard_ms']:>13.3f} {row['switchyard_p90_ms']:>7.3f} {row['ratio']:>6.2f} {row['min_ratio']:>6.2f} "
                  f"{row['litert_load_ms']:>7.1f}/{row['switchyard_load_ms']:<7.1f} "
                  f"{row['litert_rss_delta_mb']:>6.1f}/{row['switchyard_rss_delta_mb']:<7.1f} "
                  f"{row['switchyard_arena_bytes'] / 1024:>12.0f}", flush=True)
    summary = {}
    for th in sorted({r["threads"] for r in rows}):
        all_r = [r["ratio"] for r in rows if r["threads"] == th]
        base_r = [r["ratio"] for r in rows if r["threads"] == th and r["model"] in BASELINE]
        min_all = [r["min_ratio"] for r in rows if r["threads"] == th]
        min_base = [r["min_ratio"] for r in rows if r["threads"] == th and r["model"] in BASELINE]
        summary[th] = dict(all=geomean(all_r), baseline=geomean(base_r), n_all=len(all_r),
                           n_baseline=len(base_r), min_all=geomean(min_all),
                           min_baseline=geomean(min_base))
        print(f"geometric mean ratio (switchyard/litert), {th} thread(s): median "
              f"{summary[th]['all']:.3f} over {len(all_r)} models, "
              f"{summary[th]['baseline']:.3f} over the {len(base_r)} baseline models; "
              f"min {summary[th]['min_all']:.3f} / {summary[th]['min_baseline']:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(rows=rows, failed=failed, geomean=summary, loadavg=os.getloadavg()), fh, indent=1)


if __name__ == "__main__":
    main()
