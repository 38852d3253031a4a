#!/usr/bin/env python3
"""Switchyard vs LiteRT (XNNPACK) in executed instructions per invoke, under callgrind.

On a machine shared with other work, wall-clock medians move with the load; the number
of instructions a process executes does not. This script runs each side under
`valgrind --tool=callgrind` twice, with a few and with more invokes after the same
warm-up, and takes the difference divided by the extra invokes: instructions per
invoke, with load, prepare, Python start-up and input reading cancelled out. Tiny
models get more invokes, until the difference is at least 40M instructions.

Both sides run on the same inputs (golden/<stem>/input_<i>.npy) at 1 thread by default.
Valgrind's virtual CPU has no AVX-512, so both runtimes take their AVX2+FMA paths (the
same ISA for both, which is what a fair instruction count needs). Instructions are not
time (memory stalls and instruction latencies differ), so these are a guide for A/B
comparisons of kernels; compare_litert.py gives the wall-clock ratios.

Several --binary paths (e.g. a build before and after a kernel change) are each measured
against the same LiteRT figure, one ratio column per binary.

usage: .venv/bin/python bench/callgrind_compare.py [--models a.tflite ...] [--threads 1]
           [--invokes 3] [--binary target/release/switchyard [other ...]] [--json out.json]
Needs a release build first: cargo build --release -p switchyard-cli
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_litert import MODELS, golden_inputs, stem  # noqa: E402


def callgrind_ir(cmd):
    """Total instructions executed by cmd under callgrind."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            "--dump-instr=no", "--dump-line=no"] + cmd,
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
        with open(out) as fh:
            for line in fh:
                m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                if m:
                    return int(m.group(1))
    raise RuntimeError(f"no instruction total for {' '.join(cmd)}")


def litert_cmd(path, threads, invokes):
    return [sys.executable, os.path.abspath(__file__), "--child", path, str(threads),
            str(invokes)]


def switchyard_cmd(binary, path, threads, invokes):
    return [binary, "bench", path, "--local", "--threads", str(threads), "--runs",
            str(invokes), "--warmup", "1", "--no-profile", "--inputs",
            ",".join(golden_inputs(path))]


def per_invoke(make_cmd, invokes):
    """Instructions per invoke; tiny models get more invokes until the difference is
    large against run-to-run noise of the process around them (under 1M
    instructions, so 40M keeps it within ~2%)."""
    lo = callgrind_ir(make_cmd(1))
    while True:
        hi = callgrind_ir(make_cmd(1 + invokes))
        if hi - lo >= 40e6 or invokes >= 5000:
            return (hi - lo) / invokes
        invokes = min(5000, max(invokes * 4, int(invokes * 50e6 / max(hi - lo, 1))))


def child(path, threads, invokes):
    """In the measured process: one warm-up invoke, then `invokes` more."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    xs = [np.load(p) for p in golden_inputs(path)]
    it = Interpreter(model_path=path, num_threads=threads)
    for d, x in zip(it.get_input_details(), xs):
        if tuple(d["shape"]) != x.shape:
            it.resize_tensor_input(d["index"], x.shape, strict=False)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    it.invoke()
    # The binding's own Invoke, without the Python wrapper's safety check, so that as
    # little Python as possible counts against LiteRT on the tiny models.
    invoke = it._interpreter.Invoke
    for _ in range(invokes - 1):
        invoke()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--invokes", type=int, default=3,
                    help="extra invokes of the second run (the difference is divided by it)")
    ap.add_argument("--binary", nargs="+", default=[os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "switchyard")])
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "THREADS", "INVOKES"))
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]))
        return
    for b in a.binary:
        if not os.path.exists(b):
            sys.exit(f"{b} missing: run cargo build --release -p switchyard-cli")
    models = a.models or [os.path.join(ROOT, "models", m) for m in MODELS]
    print(f"instructions per invoke under callgrind (AVX2 paths on both sides), "
          f"{a.threads} thread(s), {a.invokes}+ invokes differenced", flush=True)
    for i, b in enumerate(a.binary):
        print(f"  switchyard[{i}] = {b}", flush=True)
    head = "".join(f" {'sy[%d] Minstr' % i:>14} {'ratio':>6}" for i in range(len(a.binary)))
    print(f"{'model':<31} {'litert Minstr':>13}{head}", flush=True)
    rows = []
    for path in models:
        try:
            lt = per_invoke(lambda n: litert_cmd(path, a.threads, n), a.invokes)
            sys_ = [per_invoke(lambda n, b=b: switchyard_cmd(b, path, a.threads, n), a.invokes)
                    for b in a.binary]
        except RuntimeError as e:
            print(f"{stem(path):<31} failed: {e}", flush=True)
            continue
        row = dict(model=stem(path), litert_instr=lt, switchyard_instr=sys_,
                   ratio=[sy / lt for sy in sys_])
        rows.append(row)
        cols = "".join(f" {sy / 1e6:>14.3f} {sy / lt:>6.2f}" for sy in sys_)
        print(f"{row['model']:<31} {lt / 1e6:>13.3f}{cols}", flush=True)
    for i, b in enumerate(a.binary):
        rs = [r["ratio"][i] for r in rows if r["ratio"][i] > 0]
        if rs:
            g = math.exp(sum(math.log(r) for r in rs) / len(rs))
            print(f"geometric mean instruction ratio, switchyard[{i}], over {len(rs)} models: "
                  f"{g:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(rows=rows, threads=a.threads, binaries=a.binary), fh, indent=1)


if __name__ == "__main__":
    main()
