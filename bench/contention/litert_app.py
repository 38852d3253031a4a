#!/usr/bin/env python3
"""One app of `switchyard loadtest` on the status-quo side: its own LiteRT interpreter.

The twin of `switchyard loadtest-app` (cli/src/commands/loadtest_app.rs): same
arguments, same protocol, same frame loop, so both sides are judged alike. LiteRT as
apps ship it: ai_edge_litert's Interpreter with XNNPACK (its default CPU path) and
`--threads` threads, on the same inputs (golden/<model>/input_<i>.npy).

Protocol:
  1. load the model, prepare the inputs, run one warm-up frame;
  2. print `READY {json}` (RSS before and after the load);
  3. read `START <unix time> <seconds>` on stdin, then serve frames until then;
  4. print `RESULT {json}`.

Frame loop: frames arrive at `fps` from the start time; the app always works on the
newest frame that has arrived (older ones it had no time for are dropped, as a camera
pipeline overwrites them); a frame is met when it completes within `deadline_ms` of
its scheduled arrival. Back-to-back apps send their next request as soon as one returns.
"""
import argparse
import json
import math
import sys
import time


def own_memory_kib():
    rss = hwm = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = int(round((len(sorted_values) - 1) * p))
    return sorted_values[min(i, len(sorted_values) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", default="")
    ap.add_argument("--fps", type=float, default=0.0)
    ap.add_argument("--deadline-ms", type=float, default=None)
    ap.add_argument("--priority", default="interactive")
    ap.add_argument("--back-to-back", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rss_before, _ = own_memory_kib()
    interp = Interpreter(model_path=args.model, num_threads=args.threads)
    interp.allocate_tensors()
    details = interp.get_input_details()
    paths = [p for p in args.inputs.split(",") if p]
    frames = []
    for i, d in enumerate(details):
        if i < len(paths):
            frames.append(np.load(paths[i]).astype(d["dtype"]).reshape(d["shape"]))
        else:
            frames.append(np.zeros(d["shape"], dtype=d["dtype"]))
    outputs = interp.get_output_details()

    def infer():
        for d, x in zip(details, frames):
            interp.set_tensor(d["index"], x)
        interp.invoke()
        for o in outputs:
            interp.get_tensor(o["index"])

    infer()  # warm-up, as the daemon side's first frame
    rss_after, _ = own_memory_kib()
    print("READY " + json.dumps({"rss_before_load_kib": rss_before,
                                  "rss_after_load_kib": rss_after}), flush=True)

    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "START":
        sys.exit(f"expected `START <unix time> <seconds>`, got {line}")
    t0_unix, duration = float(line[1]), float(line[2])
    start = time.monotonic() + (t0_unix - time.time())
    end = start + duration
    r = {"name": args.name, "frames": 0, "met": 0, "completed": 0, "dropped": 0,
         "refused": 0, "failed": 0}
    latencies = []
    wait = start - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    if args.back_to_back:
        while time.monotonic() < end:
            t = time.monotonic()
            r["frames"] += 1
            infer()
            r["completed"] += 1
            latencies.append((time.monotonic() - t) * 1e3)
    else:
        if not args.fps > 0:
            sys.exit("--fps must be positive for a frame app")
        period = 1.0 / args.fps
        deadline = (args.deadline_ms if args.deadline_ms is not None else 1e3 / args.fps) / 1e3
        r["frames"] = math.ceil(duration / period)
        nxt = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            newest = math.floor((now - start) / period)
            if newest < nxt:
                time.sleep(max(0.0, start + nxt * period - now))
                continue
            if newest >= r["frames"]:
                break
            r["dropped"] += newest - nxt
            arrival = start + newest * period
            infer()
            done = time.monotonic()
            r["completed"] += 1
            latencies.append((done - arrival) * 1e3)
            if done <= arrival + deadline:
                r["met"] += 1
            nxt = newest + 1
    latencies.sort()
    r["p50_ms"] = percentile(latencies, 0.50)
    r["p99_ms"] = percentile(latencies, 0.99)
    r["throughput"] = r["completed"] / max(duration, 1e-9)
    rss, hwm = own_memory_kib()
    r["rss_end_kib"] = rss
    r["hwm_kib"] = hwm
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
