"""The serving sweep of a finished workflow as a Markdown table and a CSV.  No GPU needed.

    python benchmarks/serve/summarize.py RESULTS_DIR [OUT_PREFIX]

RESULTS_DIR is the ``results/`` folder of ``snakemake --configfile tests/gpu/serve.yaml``; the table reads each
serving run's traced and untraced run records (``profile/run.json``, ``baseline/run.json``) and the study table
(``study/runs.parquet``: GPU busy share, requests per engine step). Writes OUT_PREFIX.md and OUT_PREFIX.csv
(default: benchmarks/serve/results), one row per run in request-rate order.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
COLUMNS = (
    "run",
    "request_rate",
    "req_per_s_untraced",
    "req_per_s_traced",
    "out_tok_per_s_untraced",
    "ttft_p50_ms_untraced",
    "ttft_p99_ms_untraced",
    "ttft_p99_ms_traced",
    "tpot_p50_ms_untraced",
    "tpot_p50_ms_traced",
    "itl_p99_ms_untraced",
    "gpu_busy_corrected",
    "requests_per_step",
    "kernels_captured",
)


def row(results: Path, study: dict[str, dict[str, object]], run: str) -> dict[str, object]:
    traced = json.loads((results / run / "profile" / "run.json").read_text())
    untraced = json.loads((results / run / "baseline" / "run.json").read_text())
    a, b = traced["serving"], untraced["serving"]
    return {
        "run": run,
        "request_rate": a["request_rate"],
        "req_per_s_untraced": b["request_throughput_per_s"],
        "req_per_s_traced": a["request_throughput_per_s"],
        "out_tok_per_s_untraced": b["output_tokens_per_s"],
        "ttft_p50_ms_untraced": b["ttft"]["p50_ms"],
        "ttft_p99_ms_untraced": b["ttft"]["p99_ms"],
        "ttft_p99_ms_traced": a["ttft"]["p99_ms"],
        "tpot_p50_ms_untraced": b["tpot"]["p50_ms"],
        "tpot_p50_ms_traced": a["tpot"]["p50_ms"],
        "itl_p99_ms_untraced": b["itl"]["p99_ms"],
        "gpu_busy_corrected": study[run]["busy_share_corrected"],
        "requests_per_step": study[run]["mean_batch_requests"],
        "kernels_captured": traced["nsys"]["kernels_captured"],
    }


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 1 else f"{value:,.2f}"
    return "n/a" if value is None else str(value)


def main(results: Path, prefix: Path) -> None:
    table = pq.read_table(results / "study" / "runs.parquet").to_pylist()
    study = {str(r["run"]): r for r in table if r["mode"] == "serve" and r["status"] == "ok"}
    rows = sorted((row(results, study, run) for run in study), key=lambda r: float(r["request_rate"] or 0))
    with prefix.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results")
