#!/usr/bin/env python3
"""Ask LiteRT's built-in resolver which single-op models it accepts.

Reads DIR/manifest.json (written by `cargo run -p switchyard-testkit --bin litert_probe`):
one entry per case with its model file and input files. For each case and each of
LiteRT's two built-in kernel sets -- BUILTIN_WITHOUT_DEFAULT_DELEGATES (the optimized
built-in kernels, XNNPACK off) and BUILTIN_REF (the reference kernels) -- it loads the
model, allocates, sets the inputs and invokes once. Accepted means all of that
succeeded; otherwise the first line of LiteRT's error is kept.

With --save-outputs, the outputs of the built-in (non-reference) kernels of each
accepted case are written as DIR/<model stem>_out<j>.npy: the oracle of the coverage
test (tests/op_coverage.rs), which runs the same cases in both Switchyard registries.

usage: .venv/bin/python scripts/probe_litert.py DIR OUT.json [--save-outputs]
"""
import json
import os
import sys

import numpy as np


def try_case(path, inputs, resolver, save=None):
    from ai_edge_litert.interpreter import Interpreter
    try:
        it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        for d, x in zip(it.get_input_details(), inputs):
            it.set_tensor(d["index"], x)
        it.invoke()
        if save:
            for j, d in enumerate(it.get_output_details()):
                np.save(f"{save}_out{j}.npy", it.get_tensor(d["index"]))
        return True, ""
    except Exception as e:  # noqa: BLE001  (LiteRT raises RuntimeError/ValueError)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        msg = next((ln for ln in lines if "Node number" not in ln), lines[0] if lines else "")
        return False, msg[:200]


def main():
    import ai_edge_litert
    from importlib.metadata import version
    from ai_edge_litert.interpreter import OpResolverType
    d, out = sys.argv[1], sys.argv[2]
    save = "--save-outputs" in sys.argv[3:]
    with open(os.path.join(d, "manifest.json")) as fh:
        cases = json.load(fh)
    rows = []
    for c in cases:
        xs = [np.load(os.path.join(d, f)) for f in c["inputs"]]
        path = os.path.join(d, c["model"])
        stem = os.path.join(d, c["model"][: -len(".tflite")]) if save else None
        opt_ok, opt_err = try_case(path, xs, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, stem)
        ref_ok, ref_err = try_case(path, xs, OpResolverType.BUILTIN_REF)
        row = dict(op=c["op"], dtype=c["dtype"], builtin=opt_ok, builtin_ref=ref_ok)
        if c.get("variant"):
            row["variant"] = c["variant"]
        if not opt_ok:
            row["builtin_error"] = opt_err
        if not ref_ok and ref_err != opt_err:
            row["builtin_ref_error"] = ref_err
        rows.append(row)
    _ = ai_edge_litert
    doc = dict(
        about="Which op x dtype single-op models LiteRT's built-in resolver accepts "
              "(prepare + one invoke). Made by: cargo run -p switchyard-testkit --bin "
              "litert_probe -- docs/coverage/litert_builtin.json",
        litert_version=version("ai-edge-litert"),
        dtype_keys="activation dtype; hybrid_int8 = float activations with constant int8 "
                   "weights; a->b = conversion ops (as switchyard inspect --json)",
        cases=rows,
    )
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    acc = sum(r["builtin"] for r in rows)
    print(f"probe_litert: {acc} of {len(rows)} cases accepted by the built-in resolver -> {out}")


if __name__ == "__main__":
    main()
