#!/usr/bin/env python3
"""Turns bench/gpu/real_gpu.sh's raw files into summary.json and summary.md: per float
model, the figures issue 11's "Done when" is judged on, measured in the same run:

- Switchyard through the daemon (median run_us of 10 requests), the precision the
  allowlist picked, and the ratios to LiteRT's GPU accelerator and to the optimized
  CPU kernels at the machine's full thread count;
- errors: the allowlist's fp32 and fp16 errors against the CPU reference, LiteRT-GPU's
  error against XNNPACK, and the daemon's outputs against XNNPACK;
- load: our first GPU compile (cold, no driver shader cache) and the reload from the
  persisted pipeline cache, against LiteRT-GPU's load;
- the bench's own GPU latency in fp32 and fp16, dispatches per run after fusion, and the
  work counters per run.

Usage: summarize.py RAW_DIR OUT_DIR MODELS_DIR (standard library only).
"""

import hashlib
import json
import pathlib
import statistics
import sys

MODELS = [
    "mp_pose_detection",
    "mp_selfie_segmentation",
    "mp_hand_landmark_lite",
    "mp_iris_landmark",
    "mp_face_detection_short_range",
    "oww_embedding_model",
    "gen_mobilenetv2_035_96_float",
]


def load(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def fmt(v, spec=".3f"):
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def main():
    raw, out, models = (pathlib.Path(a) for a in sys.argv[1:4])
    litert = (load(raw / "litert.json") or {}).get("models", {})
    ours_xnn = (load(raw / "ours_vs_xnnpack.json") or {}).get("models", {})
    allow = load(raw / "daemon/allowlist.json") or {}
    entries = allow.get("entries", [])
    rows = {}
    for m in MODELS:
        r = {}
        cpu = load(raw / f"bench/cpu_{m}.json") or {}
        g32 = load(raw / f"bench/gpu32_cold_{m}.json") or {}
        g32c = load(raw / f"bench/gpu32_cached_{m}.json") or {}
        g16 = load(raw / f"bench/gpu16_cold_{m}.json") or {}
        r["cpu_ms"] = cpu.get("median_ms")
        r["cpu_threads"] = cpu.get("threads")
        r["bench_gpu_fp32_ms"] = g32.get("median_ms")
        r["bench_gpu_fp16_ms"] = g16.get("median_ms")
        r["dispatches"] = g32.get("dispatches")
        r["gpu_nodes"] = f"{g32.get('gpu_nodes')}/{g32.get('runnable_nodes')}" if g32 else None
        r["per_run"] = g32.get("per_run")
        r["compile_cold_ms"] = g32.get("gpu_compile_ms")
        r["compile_cached_ms"] = g32c.get("gpu_compile_ms")
        r["pipeline_cache_loaded_bytes"] = g32c.get("pipeline_cache_loaded_bytes")
        if r["compile_cold_ms"] and r["compile_cached_ms"]:
            r["cache_speedup"] = r["compile_cold_ms"] / max(r["compile_cached_ms"], 1e-9)
        runs = []
        for i in range(1, 11):
            d = load(raw / f"daemon/{m}_run{i}.json")
            if d and "run_us" in d:
                runs.append(d["run_us"])
        r["daemon_run_us_median"] = statistics.median(runs) if runs else None
        r["daemon_runs"] = len(runs)
        r["daemon_first_request_s"] = (load(raw / f"daemon/{m}_load.json") or {}).get(
            "first_request_s"
        )
        plan = load(raw / f"daemon/{m}_placement.json") or {}
        parts = plan.get("partitions") or []
        r["daemon_delegates"] = sorted({p.get("delegate") for p in parts if p.get("delegate") != "cpu"})
        r["daemon_gpu_nodes"] = sum(
            len(p.get("nodes", [])) for p in parts if str(p.get("delegate", "")).startswith("gpu")
        )
        lt = litert.get(m, {})
        lg = lt.get("litert_gpu") or {}
        r["litert_gpu_ms"] = lg.get("run_ms")
        r["litert_gpu_end_to_end_ms"] = lg.get("end_to_end_ms")
        r["litert_gpu_load_s"] = lg.get("load_s")
        r["litert_gpu_fully_accelerated"] = lg.get("fully_accelerated")
        r["litert_gpu_error"] = lg.get("error_vs_xnnpack")
        r["litert_gpu_failure"] = lt.get("gpu_error")
        r["xnnpack_ms"] = lt.get("xnnpack_ms")
        r["ours_error_vs_xnnpack"] = (ours_xnn.get(m) or {}).get("switchyard_error_vs_xnnpack")
        rows[m] = r
    # The allowlist keys decisions by the model's sha256 (then the partition's nodes).
    for m in MODELS:
        try:
            sha = hashlib.sha256((models / f"{m}.tflite").read_bytes()).hexdigest()
        except OSError:
            sha = None
        for e in entries:
            if sha and str(e.get("subject", "")).startswith(sha):
                key = "fp16" if e.get("processor") == "gpu-fp16" else "fp32"
                if e.get("processor") in ("gpu", "gpu-fp16"):
                    rows[m][f"allowlist_{key}_error"] = e.get("max_error")
                    rows[m][f"allowlist_{key}_verdict"] = e.get("verdict")
                    rows[m][f"allowlist_{key}_reason"] = e.get("reason")
    for r in rows.values():
        ours_ms = r["daemon_run_us_median"] / 1e3 if r["daemon_run_us_median"] else None
        r["ours_ms"] = ours_ms
        if ours_ms and r["litert_gpu_ms"]:
            r["ratio_vs_litert_gpu"] = ours_ms / r["litert_gpu_ms"]
        if ours_ms and r["cpu_ms"]:
            r["ratio_vs_cpu"] = ours_ms / r["cpu_ms"]
        if r["compile_cold_ms"] and r["litert_gpu_load_s"]:
            r["compile_vs_litert_load"] = r["compile_cold_ms"] / (r["litert_gpu_load_s"] * 1e3)
    shutdown = load(raw / "daemon/shutdown.json") or {}
    tests = ""
    try:
        tests = [l for l in (raw / "gpu_tests.txt").read_text().splitlines() if l.startswith("test result")][-1]
    except (OSError, IndexError):
        pass
    summary = {
        "gpu_tests": tests,
        "daemon_shutdown": shutdown,
        "adapter": next(
            (l for l in (raw / "adapter.txt").read_text().splitlines() if "XDG_RUNTIME_DIR" not in l),
            None,
        )
        if (raw / "adapter.txt").exists()
        else None,
        "models": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# Real-GPU check (issue 11)",
        "",
        f"- adapter: {summary['adapter']}",
        f"- GPU tests: {tests}",
        f"- daemon exit status after SIGTERM: {shutdown.get('exit_status')}",
        "",
        "| model | ours (daemon) ms | picked | LiteRT GPU ms | ours/LiteRT | CPU opt ms (threads) | ours/CPU | fp32 err | fp16 err | LiteRT err | ours vs XNNPACK | compile cold / cached ms | LiteRT load s | dispatches |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, r in rows.items():
        lg = fmt(r["litert_gpu_ms"]) if r["litert_gpu_ms"] is not None else ("failed" if r["litert_gpu_failure"] else "–")
        lines.append(
            f"| {m} | {fmt(r['ours_ms'])} | {','.join(r['daemon_delegates']) or 'cpu'} | {lg} | "
            f"{fmt(r.get('ratio_vs_litert_gpu'), '.2f')} | {fmt(r['cpu_ms'])} ({r['cpu_threads']}) | "
            f"{fmt(r.get('ratio_vs_cpu'), '.2f')} | {fmt(r.get('allowlist_fp32_error'), '.1e')} | "
            f"{fmt(r.get('allowlist_fp16_error'), '.1e')} | {fmt(r['litert_gpu_error'], '.1e')} | "
            f"{fmt(r['ours_error_vs_xnnpack'], '.1e')} | {fmt(r['compile_cold_ms'], '.0f')} / "
            f"{fmt(r['compile_cached_ms'], '.0f')} | {fmt(r['litert_gpu_load_s'], '.2f')} | {fmt(r['dispatches'])} |"
        )
    lines += [
        "",
        "Bench (`switchyard bench --device gpu`, in-process, median of 50): fp32 / fp16 ms:",
        "",
    ]
    for m, r in rows.items():
        lines.append(
            f"- {m}: {fmt(r['bench_gpu_fp32_ms'])} / {fmt(r['bench_gpu_fp16_ms'])} ms, GPU nodes {r['gpu_nodes']} runnable (the rest folded at load), per run {r['per_run']}"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
