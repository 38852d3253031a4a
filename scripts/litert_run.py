#!/usr/bin/env python3
"""Run a .tflite model in LiteRT on .npy inputs and write output_<i>.npy files.

The oracle of Switchyard's tests: the Rust test kit calls this with the model bytes it
built (or a real model) and compares Switchyard's outputs with what this writes.

usage: litert_run.py --model M.tflite [--inputs a.npy,b.npy] --out DIR [--xnnpack]
  --xnnpack   run as LiteRT ships (default XNNPACK delegate); without it, the built-in
              kernels only (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
"""
import argparse
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--xnnpack", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = dict(model_path=a.model, num_threads=a.threads)
    if not a.xnnpack:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw)
    xs = [np.load(p) for p in a.inputs.split(",") if p]
    details = it.get_input_details()
    if len(xs) != len(details):
        sys.exit(f"model takes {len(details)} inputs, got {len(xs)}")
    for d, x in zip(details, xs):
        if tuple(d["shape"]) != x.shape:
            it.resize_tensor_input(d["index"], x.shape, strict=False)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    it.invoke()
    os.makedirs(a.out, exist_ok=True)
    for i, d in enumerate(it.get_output_details()):
        np.save(os.path.join(a.out, f"output_{i}.npy"), it.get_tensor(d["index"]))


if __name__ == "__main__":
    main()
