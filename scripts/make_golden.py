#!/usr/bin/env python3
"""Golden outputs from LiteRT for the anchor models: the oracle of the real-model tests.

For each model writes <out>/<model stem>/:
  input_<i>.npy        deterministic input i: numpy RandomState(0), drawn in input order;
                       float inputs uniform in the model's range (INPUT_RANGE below,
                       default [-1, 1]), integer inputs uniform over the dtype's range
  output_<i>.npy       LiteRT's output i as LiteRT ships (XNNPACK delegate on)
  output_<i>.ref.npy   LiteRT's built-in kernels (no XNNPACK), where they can run the
                       model: the exact oracle for an interpreter's reference kernels
  seq_input_0.npy, seq_output_<i>[.ref].npy
                       for stateful models (resource variables): T invokes in a row on
                       one interpreter, stacked on a new leading axis
  meta.json            names, shapes, dtypes, LiteRT version, which files exist

usage: .venv/bin/python scripts/make_golden.py --out golden models/*.tflite
"""
import argparse
import json
import os

import numpy as np

# Plausible input normalisations; they only need to be deterministic and in range.
INPUT_RANGE = {
    "mp_iris_landmark": (0.0, 1.0),
    "mp_hand_landmark_lite": (0.0, 1.0),
    "mp_selfie_segmentation": (0.0, 1.0),
    "oww_melspectrogram": (-3000.0, 3000.0),
    "oww_embedding_model": (0.0, 4.0),
    "tfm_sine_float": (0.0, 6.2831855),
}
# Models whose stored input shape is a placeholder.
RESIZE = {"oww_melspectrogram": [[1, 1760]]}
# Streaming levels that make the wake-word detector fire now and then (int8 units).
SEQ_LEVEL = {"mww_okay_nabu": (-120.0, -90.0), "mww_alexa": (-120.0, -90.0),
             "mww_hey_jarvis": (-120.0, -90.0), "mww_hey_mycroft": (-120.0, -90.0)}
STATEFUL_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}
SEQ_STEPS = 64


def interpreter(path, stem, xnnpack):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kw = dict(model_path=path, num_threads=1)
    if not xnnpack:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw)
    for d, shape in zip(it.get_input_details(), RESIZE.get(stem, [])):
        it.resize_tensor_input(d["index"], shape, strict=False)
    it.allocate_tensors()
    return it


def make_inputs(it, stem):
    rs = np.random.RandomState(0)
    lo, hi = INPUT_RANGE.get(stem, (-1.0, 1.0))
    xs = []
    for d in it.get_input_details():
        shape = tuple(int(s) for s in d["shape"])
        dt = np.dtype(d["dtype"])
        if dt.kind == "f":
            xs.append(rs.uniform(lo, hi, size=shape).astype(dt))
        else:
            info = np.iinfo(dt)
            xs.append(rs.randint(int(info.min), int(info.max) + 1, size=shape).astype(dt))
    return xs


def invoke(it, xs):
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def seq_inputs(it, stem, steps, block=16):
    """RandomState(1): a random level per block of 16 steps plus +-10% noise."""
    rs = np.random.RandomState(1)
    seq = []
    for d in it.get_input_details():
        dt = np.dtype(d["dtype"])
        shape = tuple(int(v) for v in d["shape"])
        if dt.kind == "f":
            lo, hi = INPUT_RANGE.get(stem, (-1.0, 1.0))
        else:
            lo, hi = float(np.iinfo(dt).min), float(np.iinfo(dt).max)
        llo, lhi = SEQ_LEVEL.get(stem, (lo, hi))
        levels = np.repeat(rs.uniform(llo, lhi, size=(steps + block - 1) // block), block)[:steps]
        x = levels.reshape((steps,) + (1,) * len(shape)) + rs.uniform(-0.1, 0.1, size=(steps,) + shape) * (hi - lo)
        x = np.clip(x, lo, hi)
        seq.append(x.astype(dt) if dt.kind == "f" else np.rint(x).astype(dt))
    return seq


def golden(path, out):
    import ai_edge_litert  # noqa: F401
    from importlib.metadata import version
    stem = os.path.basename(path)[: -len(".tflite")]
    d = os.path.join(out, stem)
    os.makedirs(d, exist_ok=True)
    it = interpreter(path, stem, xnnpack=True)
    xs = make_inputs(it, stem)
    for i, x in enumerate(xs):
        np.save(os.path.join(d, f"input_{i}.npy"), x)
    for i, y in enumerate(invoke(it, xs)):
        np.save(os.path.join(d, f"output_{i}.npy"), y)
    ops = {op["op_name"] for op in it._get_ops_details()}
    stateful = bool(ops & STATEFUL_OPS)
    meta = dict(model=os.path.basename(path), litert_version=version("ai-edge-litert"),
                threads=1, stateful=stateful, resize=RESIZE.get(stem),
                inputs=[dict(name=t["name"], shape=[int(s) for s in t["shape"]],
                             dtype=np.dtype(t["dtype"]).name) for t in it.get_input_details()],
                outputs=[dict(name=t["name"], shape=[int(s) for s in t["shape"]],
                              dtype=np.dtype(t["dtype"]).name) for t in it.get_output_details()])
    try:
        ref = interpreter(path, stem, xnnpack=False)
        for i, y in enumerate(invoke(ref, xs)):
            np.save(os.path.join(d, f"output_{i}.ref.npy"), y)
        meta["builtin_reference"] = True
    except Exception as e:  # noqa: BLE001  (e.g. a custom op only XNNPACK provides)
        meta["builtin_reference"] = False
        meta["builtin_reference_error"] = str(e).splitlines()[0][:200]
    if stateful:
        seq = None
        for tag, xnn in (("", True), (".ref", False)):
            s_it = interpreter(path, stem, xnnpack=xnn)
            if seq is None:
                seq = seq_inputs(s_it, stem, SEQ_STEPS)
                for i, x in enumerate(seq):
                    np.save(os.path.join(d, f"seq_input_{i}.npy"), x)
            ys = [invoke(s_it, [x[t] for x in seq]) for t in range(SEQ_STEPS)]
            for i in range(len(ys[0])):
                np.save(os.path.join(d, f"seq_output_{i}{tag}.npy"), np.stack([y[i] for y in ys]))
        meta["sequence_steps"] = SEQ_STEPS
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return stem, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    for p in a.models:
        stem, meta = golden(p, a.out)
        print(f"make_golden: {stem}: stateful={meta['stateful']} builtin_reference={meta['builtin_reference']}")


if __name__ == "__main__":
    main()
