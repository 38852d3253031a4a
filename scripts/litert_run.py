#!/usr/bin/env python3
"""Run a .tflite model in LiteRT on .npy inputs and write output_<i>.npy files.

The oracle of Switchyard's tests: the Rust test kit calls this with the model bytes it
built (or a real model) and compares Switchyard's outputs with what this writes.

usage: litert_run.py --model M.tflite [--inputs a.npy,b.npy] --out DIR [--xnnpack]
                     [--invokes K] [--signature KEY]
  --xnnpack      run as LiteRT ships (default XNNPACK delegate); without it, the built-in
                 kernels only (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
  --invokes K    invoke K times in a row on one interpreter (state such as variables
                 and CALL_ONCE persists between invokes); --inputs then holds K groups of
                 the model's inputs, one group per invoke. Outputs of invoke k go to
                 DIR/invoke_<k>/output_<i>.npy; DIR/output_<i>.npy holds the last invoke's.
  --signature KEY  run the named signature instead of subgraph 0; its inputs and outputs
                 are taken in the order of their names (sorted).
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
    ap.add_argument("--invokes", type=int, default=1)
    ap.add_argument("--signature", default=None)
    a = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = dict(model_path=a.model, num_threads=a.threads)
    if not a.xnnpack:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw)
    xs = [np.load(p) for p in a.inputs.split(",") if p]
    if a.invokes < 1:
        sys.exit("--invokes must be at least 1")
    if len(xs) % a.invokes != 0:
        sys.exit(f"{len(xs)} inputs cannot be split into {a.invokes} invokes")
    per = len(xs) // a.invokes
    groups = [xs[k * per:(k + 1) * per] for k in range(a.invokes)]
    os.makedirs(a.out, exist_ok=True)

    if a.signature is not None:
        runner = it.get_signature_runner(a.signature)
        in_names = sorted(runner.get_input_details().keys())
        if per != len(in_names):
            sys.exit(f"signature {a.signature} takes {len(in_names)} inputs, got {per}")
        results = []
        for group in groups:
            outs = runner(**dict(zip(in_names, group)))
            results.append([outs[name] for name in sorted(outs.keys())])
    else:
        details = it.get_input_details()
        if per != len(details):
            sys.exit(f"model takes {len(details)} inputs, got {per}")
        for d, x in zip(details, groups[0]):
            if tuple(d["shape"]) != x.shape:
                it.resize_tensor_input(d["index"], x.shape, strict=False)
        it.allocate_tensors()
        results = []
        for group in groups:
            for d, x in zip(it.get_input_details(), group):
                it.set_tensor(d["index"], x)
            it.invoke()
            results.append([it.get_tensor(d["index"]) for d in it.get_output_details()])

    for k, outs in enumerate(results):
        if a.invokes > 1:
            sub = os.path.join(a.out, f"invoke_{k}")
            os.makedirs(sub, exist_ok=True)
            for i, y in enumerate(outs):
                np.save(os.path.join(sub, f"output_{i}.npy"), y)
    for i, y in enumerate(results[-1]):
        np.save(os.path.join(a.out, f"output_{i}.npy"), y)


if __name__ == "__main__":
    main()
