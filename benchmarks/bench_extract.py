"""Extraction and summaries at scale, against the floors of the same machine.

    python benchmarks/bench_extract.py benchmarks/data/k1m.sqlite [more.sqlite ...] [--json out.json]

For each export: the Arrow floor (every row and column of the kernel and runtime tables fetched into
Arrow through ADBC), the GROUP BY floor (count, sum, min and max of durations per name over the same
tables, inside SQLite), then `llmprof extract` and `llmprof stats` (the six summaries nsys stats
computes by default) as separate processes, each with wall time and peak RSS (from wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIX = "cuda_gpu_kern_sum,cuda_api_sum,cuda_gpu_mem_time_sum,cuda_gpu_mem_size_sum,nvtx_sum,osrt_sum"
KERNEL, RUNTIME = "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME"

ARROW_FLOOR = """
import sys, adbc_driver_sqlite.dbapi as dbapi
with dbapi.connect("file:" + sys.argv[1] + "?mode=ro") as conn, conn.cursor() as cur:
    for table in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME"):
        cur.execute("SELECT * FROM " + table)
        cur.fetch_arrow_table()
"""
GROUP_BY_FLOOR = """
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
for table, key in (("CUPTI_ACTIVITY_KIND_KERNEL", "demangledName"), ("CUPTI_ACTIVITY_KIND_RUNTIME", "nameId")):
    db.execute(f'SELECT {key}, count(*), sum("end" - start), min("end" - start), max("end" - start) '
               f"FROM {table} GROUP BY {key}").fetchall()
"""


REPEAT = 1  # runs per measurement (--repeat); the run with the median wall time is reported


def measure(command: list[str]) -> dict[str, object]:
    """Wall seconds and peak RSS (MiB) of a child process: the median of REPEAT runs, and every wall time."""
    runs = sorted((_run(command) for _ in range(REPEAT)), key=lambda r: r["wall_s"])
    chosen: dict[str, object] = dict(runs[len(runs) // 2])
    if REPEAT > 1:
        chosen["walls_s"] = [r["wall_s"] for r in runs]
    return chosen


def _run(command: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{command}: exit {status}: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def rows(sqlite: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (KERNEL, RUNTIME)}


def same_csvs(ours: str, theirs: str) -> bool:
    """True when llmprof stats and nsys stats wrote the same bytes for each of the six reports."""
    return all(Path(f"{ours}_{r}.csv").read_bytes() == Path(f"{theirs}_{r}.csv").read_bytes() for r in SIX.split(","))


def bench(sqlite: Path, nsys: str | None = None) -> dict[str, object]:
    counts = rows(sqlite)
    total = sum(counts.values())
    python = sys.executable
    llmprof = [python, "-m", "llmprof"]
    result: dict[str, object] = {"export": sqlite.name, "bytes": sqlite.stat().st_size, "rows": counts}
    with tempfile.TemporaryDirectory() as scratch:
        result["arrow_floor"] = measure([python, "-c", ARROW_FLOOR, str(sqlite)])
        result["group_by_floor"] = measure([python, "-c", GROUP_BY_FLOOR, str(sqlite)])
        result["extract"] = measure([*llmprof, "extract", str(sqlite), "-o", f"{scratch}/x", "--quiet", "--force"])
        result["stats"] = measure(
            [*llmprof, "stats", str(sqlite), "-r", SIX, "--format", "csv", "-o", f"{scratch}/s", "--quiet", "--force"]
        )
        if nsys is not None:  # nsys stats on a copy: it may add tables to the file it reads
            copy = Path(scratch) / sqlite.name
            shutil.copy(sqlite, copy)
            fresh = ["sh", "-c", 'rm -f "$0"_*.csv; exec "$@"', f"{scratch}/n"]  # nsys keeps existing CSVs
            result["nsys_stats"] = measure(
                [
                    *fresh,
                    nsys,
                    "stats",
                    "--format",
                    "csv",
                    "--timeunit",
                    "ns",
                    "-r",
                    SIX,
                    "-o",
                    f"{scratch}/n",
                    str(copy),
                ]
            )
            result["stats_speedup_vs_nsys"] = round(result["nsys_stats"]["wall_s"] / result["stats"]["wall_s"], 2)  # type: ignore[index]
            result["stats_csv_identical_to_nsys"] = same_csvs(f"{scratch}/s", f"{scratch}/n")
    for name in ("arrow_floor", "group_by_floor", "extract", "stats", "nsys_stats"):
        if name not in result:
            continue
        entry = result[name]
        entry["rows_per_s"] = round(total / entry["wall_s"])  # type: ignore[index]
    result["extract_vs_arrow_floor"] = round(result["extract"]["wall_s"] / result["arrow_floor"]["wall_s"], 2)  # type: ignore[index]
    result["stats_vs_group_by_floor"] = round(result["stats"]["wall_s"] / result["group_by_floor"]["wall_s"], 2)  # type: ignore[index]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--nsys", help="Also time `nsys stats` (this executable) and compare its CSVs.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per measurement; the median is reported.")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    machine = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "host": platform.node(),
    }
    results = [bench(p, args.nsys) for p in args.exports]
    report = {"machine": machine, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
