"""Turn the ladder's state (as returned from the device) into the LADDER table and a CSV.  No GPU needed.

    python3 benchmarks/overhead/make_table.py [benchmarks/overhead/raw/call8/ladder_state.json]

Writes ladder_table.md (the table and the commands, pasted into LADDER.md) and ladder.csv beside this file.
Latencies are per generate call (one iteration: B prompts, 128 input and 64 output tokens each), in ms.
Overhead = median / baseline - 1, baseline = mean of the medians of the untraced runs before and after the traced
ones of the same mode (in_process: ip-untraced-1 and ip-untraced-3; hook: hk-untraced-1 and hk-untraced-2).
"""

from __future__ import annotations

import csv
import json
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = {"in_process": ("ip-untraced-1", "ip-untraced-3"), "hook": ("hk-untraced-1", "hk-untraced-2")}
BS = ("1", "16", "64")


def quantile(v: list[float], p: float) -> float:
    v = sorted(v)
    k = (len(v) - 1) * p
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


def stats(lat_s: list[float]) -> dict:
    v = [x * 1000 for x in lat_s]
    return {
        "n": len(v),
        "median": statistics.median(v),
        "q1": quantile(v, 0.25),
        "q3": quantile(v, 0.75),
        "min": min(v),
        "max": max(v),
    }


def command(rec: dict) -> str:
    """The device command with machine paths replaced by repository-relative ones."""
    argv = [a.replace("/work/main/", "").replace("/opt/torch/.venv/bin/python3", "python3") for a in rec["argv"]]
    argv = [a.replace("/tmp/ovh/rep/", "").replace("/tmp/ovh/res/", "") for a in argv]
    if "--hold-file" in argv:
        i = argv.index("--hold-file")
        del argv[i : i + 2]
    return shlex.join(argv)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else HERE / "raw" / "call8" / "ladder_state.json"
    state = json.loads(path.read_text())
    recs = sorted(state["configs"].values(), key=lambda r: r["order"])
    by = {r["name"]: r for r in recs}
    base = {
        m: {
            b: statistics.mean(stats(by[n]["workload"]["results"][b]["latency_s"])["median"] for n in names) for b in BS
        }
        for m, names in BASELINE.items()
    }
    rows, md = [], []
    md.append(
        "| # | configuration | mode | flags beyond the common ones | bs 1: median [IQR] (min–max) | "
        "bs 16: median [IQR] (min–max) | bs 64: median [IQR] (min–max) | overhead bs 1 / 16 / 64 | "
        "kernels per iteration bs 1 / 16 / 64 | CUDA API calls per iteration, bs 16 |"
    )
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        w = r["workload"]["results"]
        st = {b: stats(w[b]["latency_s"]) for b in BS}
        ov = {b: st[b]["median"] / base[r["mode"]][b] - 1 for b in BS}
        an = r.get("analysis", {})
        win = an.get("windows", {})
        kern = {b: win[b]["kernels_per_iteration"] if b in win else None for b in BS}
        api16 = win["16"]["cuda_api_per_iteration"] if "16" in win else None
        if r["flags"] is None:
            flags = "untraced" + (", profiler start/stop called" if r["range"] == "on" else "")
        else:
            flags = " ".join(f"`{f}`" for f in r["flags"])
        cell = {
            b: f"{st[b]['median']:.1f} [{st[b]['q1']:.1f}–{st[b]['q3']:.1f}] ({st[b]['min']:.1f}–{st[b]['max']:.1f})"
            for b in BS
        }
        ovs = " / ".join(f"{100 * ov[b]:+.0f} %" for b in BS)
        ks = " / ".join("–" if kern[b] is None else f"{kern[b]:,.0f}" for b in BS)
        md.append(
            f"| {r['order']} | {r['name']} | {r['mode']} | {flags} | {cell['1']} | {cell['16']} | {cell['64']} | "
            f"{ovs} | {ks} | {'–' if api16 is None else f'{api16:,.0f}'} |"
        )
        row = {
            "order": r["order"],
            "name": r["name"],
            "mode": r["mode"],
            "call": r["call"],
            "flags": "" if r["flags"] is None else " ".join(r["flags"]),
            "range": r["range"],
            "wall_s": round(r["wall_s"], 1),
            "engine_start_s": round(r["workload"]["engine_start_s"], 1),
        }
        for b in BS:
            for k in ("n", "median", "q1", "q3", "min", "max"):
                row[f"bs{b}_{k}_ms"] = round(st[b][k], 2) if k != "n" else st[b][k]
            row[f"bs{b}_overhead_pct"] = round(100 * ov[b], 1)
            row[f"bs{b}_kernels_per_iter"] = None if kern[b] is None else round(kern[b], 1)
            row[f"bs{b}_kernel_gpu_ms_per_iter"] = (
                round(win[b]["kernel_gpu_ns"] / win[b]["iterations"] / 1e6, 2) if b in win else None
            )
        row["bs16_cuda_api_per_iter"] = api16
        row["bs16_osrt_per_iter"] = win["16"].get("osrt_per_iteration") if "16" in win else None
        row["window_source"] = an.get("window_source")
        row["capture_cuda_trace"] = an.get("capture_settings", {}).get("PROCESS_0:COLLECT_CUDA_TRACE")
        row["capture_graph_mode"] = an.get("capture_settings", {}).get("PROCESS_0:CUDA_GRAPH_TRACE_OPTIONS:MODE")
        row["command"] = command(r)
        rows.append(row)
    md.append("")
    md.append(
        "Baselines (mean of the two untraced medians, ms): "
        + "; ".join(f"{m}: " + ", ".join(f"bs {b} {base[m][b]:.1f}" for b in BS) for m in base)
    )
    md.append("")
    md.append(
        "Commands (run from the repository root on the GPU machine after `source /tmp/site/vllm_env.sh` and "
        "`source .device/nsys-env.sh`; the model from `python3 benchmarks/overhead/make_model.py /tmp/model`):"
    )
    md.append("")
    for row in rows:
        md.append(f"- {row['order']} {row['name']}: `{row['command']}`")
    (HERE / "ladder_table.md").write_text("\n".join(md) + "\n")
    with open(HERE / "ladder.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
