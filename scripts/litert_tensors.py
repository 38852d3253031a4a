#!/usr/bin/env python3
"""Run a .tflite model in LiteRT's built-in kernels and dump chosen tensors, including
intermediates, as tensor_<index>.npy files.

Tests use this to compare one op of a real model with LiteRT where the op's input cannot
be cut out into a single-op model (e.g. DENSIFY, whose input is a sparse constant), and it
helps to find the first tensor where Switchyard and LiteRT diverge.

usage: litert_tensors.py --model M.tflite --tensors 3,7 --out DIR [--inputs a.npy,...]
  Inputs not given are zeros of the model's input shapes. Tensor indices are those of
  subgraph 0 in the file.
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tensors", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--inputs", default="")
    a = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=a.model,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    xs = [np.load(p) for p in a.inputs.split(",") if p]
    for i, d in enumerate(it.get_input_details()):
        x = xs[i] if i < len(xs) else np.zeros(d["shape"], d["dtype"])
        it.set_tensor(d["index"], x)
    it.invoke()
    os.makedirs(a.out, exist_ok=True)
    for t in a.tensors.split(","):
        np.save(os.path.join(a.out, f"tensor_{t}.npy"), it.get_tensor(int(t)))


if __name__ == "__main__":
    main()
