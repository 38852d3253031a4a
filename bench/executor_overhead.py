#!/usr/bin/env python3
"""Executor overhead per node: Switchyard and LiteRT on chains of float32 ADD nodes of one
element each, in the same run.

A one-element ADD does almost no arithmetic, so the time per node is what the runtime
spends around each kernel: dispatch, tensor views, budget checks. Each runtime runs a
chain of N nodes and a chain of 1 node; (t(N) - t(1)) / (N - 1) is the per-node cost with
the per-invoke cost (Python's call into LiteRT, Switchyard's input copy) taken out.

LiteRT runs twice: with its built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES, one
kernel call per node, like Switchyard) and as it ships (XNNPACK, which takes the whole
chain as one delegate node). Both runtimes: 1 thread, fresh processes, interleaved
--repeat times, medians.

usage: .venv/bin/python bench/executor_overhead.py [--nodes 1000] [--runs 2000]
           [--repeat 5] [--binary target/release/switchyard]
Needs a release build first: cargo build --release -p switchyard-cli
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def litert_child(path, kernels, runs, warmup):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {}
    if kernels == "builtin":
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=path, num_threads=1, **kw)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], dtype=np.float32))
    for _ in range(warmup):
        it.invoke()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        it.invoke()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr.strip()[-600:]}")
    return p.stdout


def litert(path, kernels, runs, warmup):
    out = run([sys.executable, os.path.abspath(__file__), "--child", path, kernels,
               "--runs", str(runs), "--warmup", str(warmup)])
    return float([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])


def switchyard(binary, path, runs, warmup):
    out = run([binary, "bench", path, "--local", "--threads", "1", "--json", "--no-profile",
               "--runs", str(runs), "--warmup", str(warmup)])
    return json.loads(out)["median_ms"] * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "switchyard"))
    ap.add_argument("--child", nargs=2, metavar=("PATH", "KERNELS"))
    a = ap.parse_args()
    if a.child:
        print(f"RESULT {litert_child(a.child[0], a.child[1], a.runs, a.warmup)}")
        return
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} missing: run cargo build --release -p switchyard-cli")
    tmp = tempfile.mkdtemp(prefix="sy-chain-")
    paths = {}
    for n in (1, a.nodes):
        paths[n] = os.path.join(tmp, f"chain_{n}.tflite")
        run([a.binary, "make-chain-model", "--nodes", str(n), "--out", paths[n]])
    print(f"chain of {a.nodes} float32 ADD nodes of 1 element, 1 thread, median of {a.runs} "
          f"invokes, {a.repeat} interleaved repeats; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    runtimes = {
        "switchyard": lambda p: switchyard(a.binary, p, a.runs, a.warmup),
        "litert builtin": lambda p: litert(p, "builtin", a.runs, a.warmup),
        "litert xnnpack": lambda p: litert(p, "xnnpack", a.runs, a.warmup),
    }
    per_node = {k: [] for k in runtimes}
    per_invoke = {k: [] for k in runtimes}
    for _ in range(a.repeat):
        for name, f in runtimes.items():
            t1, tn = f(paths[1]), f(paths[a.nodes])
            per_node[name].append((tn - t1) / (a.nodes - 1))
            per_invoke[name].append(t1)
    print(f"{'runtime':<16} {'ns/node':>8} {'1-node invoke ns':>17}")
    med = {k: statistics.median(v) for k, v in per_node.items()}
    for name in runtimes:
        print(f"{name:<16} {med[name]:>8.1f} {statistics.median(per_invoke[name]):>17.0f}")
    print(f"ratio switchyard / litert builtin: {med['switchyard'] / med['litert builtin']:.2f}")
    print(f"ratio switchyard / litert xnnpack: {med['switchyard'] / med['litert xnnpack']:.2f}")


if __name__ == "__main__":
    main()
