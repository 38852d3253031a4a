#!/usr/bin/env python3
"""Which op x dtype combinations the benchmark set's models use, and whether LiteRT's
built-in resolver accepts each: docs/coverage/benchmark_set_ops.json.

The models are bench/compare_litert.py's set (models/, made by scripts/setup.sh); each
is listed with `switchyard inspect --json`, whose per-op dtype keys are the same as the
single-op probe's (docs/coverage/litert_builtin.json, made by the litert_probe binary).
A combination counts as accepted by LiteRT when the probe accepted its single-op model
or when LiteRT's built-in kernels run a model that contains it (scripts/make_golden.py
records that as builtin_reference in golden/<model>/meta.json).

usage: .venv/bin/python scripts/benchmark_set_ops.py [--switchyard target/debug/switchyard]
           [--out docs/coverage/benchmark_set_ops.json]
"""
import argparse
import importlib.util
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def benchmark_set():
    spec = importlib.util.spec_from_file_location("cmp", os.path.join(ROOT, "bench", "compare_litert.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MODELS


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switchyard", default=os.path.join(ROOT, "target", "debug", "switchyard"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "coverage", "benchmark_set_ops.json"))
    a = ap.parse_args()
    with open(os.path.join(ROOT, "docs", "coverage", "litert_builtin.json")) as fh:
        probe = {(c["op"], c["dtype"]): c["builtin"] for c in json.load(fh)["cases"]}
    used = {}
    for m in benchmark_set():
        stem = m[: -len(".tflite")]
        out = subprocess.run([a.switchyard, "inspect", "--json", os.path.join(ROOT, "models", m)],
                             capture_output=True, text=True, check=True).stdout
        meta_path = os.path.join(ROOT, "golden", stem, "meta.json")
        runs_builtin = False
        if os.path.exists(meta_path):
            with open(meta_path) as fh:
                runs_builtin = json.load(fh).get("builtin_reference", False)
        for sg in json.loads(out):
            for op in sg["ops"]:
                for dt in op["dtypes"]:
                    cov = (op.get("coverage") or {}).get(dt, {})
                    e = used.setdefault((op["op"], dt), dict(models=[], litert_builtin=False,
                                                            switchyard_reference=cov.get("reference"),
                                                            switchyard_optimized=cov.get("optimized")))
                    if stem not in e["models"]:
                        e["models"].append(stem)
                    e["litert_builtin"] = e["litert_builtin"] or probe.get((op["op"], dt), False) or runs_builtin
    rows = [dict(op=op, dtype=dt, **e) for (op, dt), e in sorted(used.items())]
    with open(a.out, "w") as fh:
        json.dump(dict(about="op x dtype used by the benchmark set (switchyard inspect --json), "
                             "whether LiteRT's built-in resolver accepts it, and whether "
                             "Switchyard's two CPU registries prepare it (ok, interpreter, "
                             "or the refusal). Made by scripts/benchmark_set_ops.py",
                       combinations=rows), fh, indent=1)
        fh.write("\n")
    print(f"benchmark_set_ops: {len(rows)} op x dtype combinations over "
          f"{len(benchmark_set())} models -> {a.out}")


if __name__ == "__main__":
    main()
