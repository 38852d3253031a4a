#!/usr/bin/env python3
"""LiteRT beside Switchyard on the same GPU machine, per model:

- XNNPACK (LiteRT's CPU path as shipped, all cores): the accuracy anchor, and its time;
- LiteRT's GPU accelerator (ML Drift over WebGPU/Dawn on Vulkan), reached through
  `CompiledModel.from_file(path, hardware_accel=GPU | CPU)` and `run_by_index`: load
  (compile) time, median run time, whether it is fully accelerated, and its error
  against XNNPACK;
- Switchyard's outputs (the daemon's `output_<i>.npy`, subgraph-0 order) against
  XNNPACK, when a directory of them is given.

Error = max |a - b| / max |b| per output, the worst output. A failure (Dawn refuses
lavapipe, an op it cannot run) is recorded as the model's `gpu_error` and the run goes
on. Writes one JSON document to --out.
"""

import argparse
import json
import pathlib
import statistics
import time
import traceback

import numpy as np


def rel_error(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a - b)) / scale) if b.size else 0.0


def worst(outs, refs):
    return max((rel_error(a, b) for a, b in zip(outs, refs)), default=0.0)


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def xnnpack(path, inputs, runs, threads):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x.astype(d["dtype"]).reshape(d["shape"]))
    it.invoke()
    outs = [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
    names = [d["name"] for d in it.get_output_details()]
    ms = median_ms(it.invoke, runs)
    return outs, names, ms


def litert_gpu(path, inputs, ref_outs, runs, accel):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    flags = HardwareAccelerator.CPU
    if accel == "gpu":
        flags = HardwareAccelerator.GPU | HardwareAccelerator.CPU
    t = time.perf_counter()
    cm = CompiledModel.from_file(str(path), hardware_accel=flags)
    ins = cm.create_input_buffers(0)
    outs = cm.create_output_buffers(0)
    for b, x in zip(ins, inputs):
        b.write(np.ascontiguousarray(x, dtype=np.float32))
    cm.run_by_index(0, ins, outs)
    load_s = time.perf_counter() - t
    run_ms = median_ms(lambda: cm.run_by_index(0, ins, outs), runs)

    def end_to_end():
        for b, x in zip(ins, inputs):
            b.write(np.ascontiguousarray(x, dtype=np.float32))
        cm.run_by_index(0, ins, outs)
        return [read(b) for b in outs]

    def read(b):
        shape = b.get_tensor_details()["shape"]
        n = int(np.prod(shape)) if len(shape) else 1
        return b.read(n, np.float32).reshape(shape)

    e2e_ms = median_ms(end_to_end, max(runs // 2, 1))
    got = end_to_end()
    # The signature's outputs may come in another order than the subgraph's: pair each
    # with the reference output of the same size (in order among equal sizes).
    pairs, used = [], set()
    for g in got:
        for i, r in enumerate(ref_outs):
            if i not in used and r.size == g.size:
                used.add(i)
                pairs.append((g, r))
                break
    err = worst([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) == len(ref_outs) else float("inf")
    return {
        "load_s": load_s,
        "run_ms": run_ms,
        "end_to_end_ms": e2e_ms,
        "fully_accelerated": bool(cm.is_fully_accelerated()),
        "error_vs_xnnpack": err,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="comma-separated .tflite paths")
    ap.add_argument("--inputs", required=True, help="directory with <stem>/input_<i>.npy")
    ap.add_argument("--ours", help="directory with <stem>/output_<i>.npy from switchyardd")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--accel", default="gpu", help="gpu (the anchor) or cpu (dry runs)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    report = {"accel": args.accel, "threads": args.threads, "models": {}}
    for m in args.models.split(","):
        path = pathlib.Path(m)
        stem = path.stem
        row = report["models"].setdefault(stem, {})
        try:
            ins = []
            while (pathlib.Path(args.inputs) / stem / f"input_{len(ins)}.npy").exists():
                ins.append(np.load(pathlib.Path(args.inputs) / stem / f"input_{len(ins)}.npy"))
            refs, names, ms = xnnpack(path, ins, args.runs, args.threads)
            row["xnnpack_ms"] = ms
            row["outputs"] = names
            if args.ours:
                d = pathlib.Path(args.ours) / stem
                ours = [np.load(d / f"output_{i}.npy") for i in range(len(refs))]
                row["switchyard_error_vs_xnnpack"] = worst(ours, refs)
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            row["xnnpack_error"] = f"{type(e).__name__}: {e}"
            continue
        try:
            row["litert_" + args.accel] = litert_gpu(path, ins, refs, args.runs, args.accel)
        except Exception as e:  # noqa: BLE001
            row["gpu_error"] = f"{type(e).__name__}: {e}"
            row["gpu_traceback"] = traceback.format_exc()[-2000:]
        print(stem, json.dumps({k: v for k, v in row.items() if k != "gpu_traceback"}), flush=True)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
