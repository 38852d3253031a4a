#!/usr/bin/env python3
"""Switchyard vs LiteRT (XNNPACK) on the same models, in the same run.

For each model and thread count, runs LiteRT as it ships (XNNPACK delegate on) and
`switchyard bench --local` (optimized CPU kernels) each in fresh processes, R times, and
reports the median over repeats of: median/p90 latency, load time, and peak memory
above the process baseline. Prints per-model ratios (Switchyard / LiteRT: below 1.0 means
Switchyard is faster) and the geometric mean per thread count.

usage: .venv/bin/python bench/compare_litert.py [--models m1.tflite ...] [--threads 1,2]
           [--runs 50] [--repeat 3] [--json out.json]
Needs a release build: cargo build --release -p switchyard-cli
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

# Models whose stored input shape is a placeholder (see scripts/anchors_common.py).
DEFAULT_MODELS = [
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
]


def litert_child(path, threads, runs, warmup):
    """Runs in a fresh process: LiteRT with XNNPACK, timing invoke() only."""
    import numpy as np  # noqa: F401
    from anchors_common import MODELS, make_inputs, make_interpreter
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cfg = MODELS.get(os.path.basename(path), {})
    t0 = time.perf_counter()
    it = make_interpreter(path, threads, cfg, use_xnnpack=True)
    load_ms = (time.perf_counter() - t0) * 1e3
    for d, x in zip(it.get_input_details(), make_inputs(it, cfg, seed=0)):
        it.set_tensor(d["index"], x)
    it.invoke()
    for _ in range(warmup):
        it.invoke()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        it.invoke()
        ts.append((time.perf_counter_ns() - t0) / 1e6)
    ts.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return dict(median_ms=statistics.median(ts), p90_ms=ts[int(round(0.9 * (len(ts) - 1)))],
                load_ms=load_ms, peak_mb=rss - rss_base)


def run_child(cmd):
    """Runs cmd, returns (stdout, peak RSS of that child in MB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip()[-400:]}")
    return out, ru.ru_maxrss / 1024.0


def litert(path, threads, runs, warmup):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path, str(threads),
           "--runs", str(runs), "--warmup", str(warmup)]
    out, _ = run_child(cmd)
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def switchyard(binary, path, threads, runs, warmup):
    from anchors_common import MODELS
    cfg = MODELS.get(os.path.basename(path), {})
    cmd = [binary, "bench", path, "--local", "--threads", str(threads), "--runs", str(runs),
           "--warmup", str(warmup), "--json", "--no-profile"]
    if cfg.get("resize"):
        cmd += ["--input-shape", ",".join(str(d) for d in cfg["resize"][0])]
    # Peak RSS of a child is only visible as the max over all children so far, so
    # measure the baseline with a trivial invocation first.
    out, _ = run_child(cmd)
    r = json.loads(out)
    return dict(median_ms=r["median_ms"], p90_ms=r["p90_ms"], load_ms=r["load_ms"],
                arena_mb=(r["arena_bytes"] + r["heap_bytes"]) / 2**20)


def geomean(xs):
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/switchyard"))
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "THREADS"))
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(litert_child(a.child[0], int(a.child[1]), a.runs, a.warmup)))
        return
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} missing: run cargo build --release -p switchyard-cli")
    models = a.models or [os.path.join(ROOT, "models", m) for m in DEFAULT_MODELS]
    rows = []
    print(f"{'model':<34} {'thr':>3} {'litert ms':>10} {'switchyard ms':>14} {'ratio':>6} "
          f"{'load lt/sy ms':>15} {'lt rss MB':>9} {'sy arena MB':>11}", flush=True)
    for path in models:
        for th in [int(t) for t in a.threads.split(",")]:
            lt = [litert(path, th, a.runs, a.warmup) for _ in range(a.repeat)]
            sy = [switchyard(a.binary, path, th, a.runs, a.warmup) for _ in range(a.repeat)]
            med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
            row = dict(model=os.path.basename(path), threads=th,
                       litert_ms=med(lt, "median_ms"), switchyard_ms=med(sy, "median_ms"),
                       litert_p90_ms=med(lt, "p90_ms"), switchyard_p90_ms=med(sy, "p90_ms"),
                       litert_load_ms=med(lt, "load_ms"), switchyard_load_ms=med(sy, "load_ms"),
                       litert_peak_mb=med(lt, "peak_mb"), switchyard_arena_mb=med(sy, "arena_mb"))
            row["ratio"] = row["switchyard_ms"] / row["litert_ms"]
            rows.append(row)
            print(f"{row['model']:<34} {th:>3} {row['litert_ms']:>10.3f} {row['switchyard_ms']:>14.3f} "
                  f"{row['ratio']:>6.2f} {row['litert_load_ms']:>7.1f}/{row['switchyard_load_ms']:<7.1f} "
                  f"{row['litert_peak_mb']:>9.1f} {row['switchyard_arena_mb']:>11.2f}", flush=True)
    for th in sorted({r["threads"] for r in rows}):
        g = geomean([r["ratio"] for r in rows if r["threads"] == th])
        print(f"geometric mean ratio (switchyard/litert), {th} thread(s): {g:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
