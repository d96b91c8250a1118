"""Count what one ladder capture holds, per batch-size window, from its SQLite export (``nsys export --type sqlite``).

    python3 benchmarks/overhead/analyze_report.py REPORT.sqlite [--iters 1:8,16:20,64:8] > analysis.json

Windows (one per batch size of ladder_workload.py), first that applies:
1. ``markers``: the marker copies (CUPTI_ACTIVITY_KIND_MEMCPY rows of MARKER_BASE + B bytes, MARKER_END): the window
   of B runs from the end of its marker to the start of the next marker (GPU time; the workload synchronizes
   around each marker, so no kernel of another batch size falls inside).
2. ``nvtx``: the NVTX range ``bs B`` of the driver (host time; kernels counted by their GPU start inside it).
3. ``all``: one window over the whole report.
In each window: rows of every table that has a ``start`` column (kernels, CUDA API calls, copies, graph events,
NVTX, OS runtime calls, profiler overhead, ...), kernel GPU time, the top CUDA API names, and the profiler
overhead records (nsys's own PROFILER_OVERHEAD table) by name.  With ``--iters``, per-iteration figures too.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys

MARKER_BASE = 1_234_000
MARKER_END = 1_234_999
KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
NVTX = "NVTX_EVENTS"


def tables_with_start(con: sqlite3.Connection) -> list[str]:
    out = []
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        cols = {r[1] for r in con.execute(f"PRAGMA table_info([{name}])")}
        if "start" in cols:
            out.append(name)
    return out


def has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def marker_windows(con: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    if not has_table(con, MEMCPY):
        return {}
    rows = con.execute(
        f"SELECT start, end, bytes FROM {MEMCPY} WHERE bytes BETWEEN ? AND ? ORDER BY start", (MARKER_BASE, MARKER_END)
    ).fetchall()
    wins: dict[str, tuple[int, int]] = {}
    for (_start, e, nbytes), nxt in zip(rows, rows[1:] + [None]):
        if nbytes == MARKER_END:
            continue
        end = nxt[0] if nxt is not None else con.execute(f"SELECT max(end) + 1 FROM {KERNEL}").fetchone()[0]
        wins[str(nbytes - MARKER_BASE)] = (e, end)
    return wins


def nvtx_ranges(con: sqlite3.Connection) -> list[tuple[str, int, int]]:
    if not has_table(con, NVTX):
        return []
    cols = {r[1] for r in con.execute(f"PRAGMA table_info({NVTX})")}
    text = "coalesce(n.text, s.value)" if "textId" in cols else "n.text"
    join = "LEFT JOIN StringIds s ON s.id = n.textId" if "textId" in cols else ""
    return [
        (t, s, e)
        for t, s, e in con.execute(
            f"SELECT {text}, n.start, n.end FROM {NVTX} n {join} "
            "WHERE n.end IS NOT NULL AND n.eventType IN (59, 60, 70, 71)"
        )
        if t is not None
    ]


def nvtx_windows(con: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    wins = {}
    for text, s, e in nvtx_ranges(con):
        m = re.fullmatch(r"bs (\d+)", text)
        if m:
            wins[m.group(1)] = (s, e)
    return wins


def whole_window(con: sqlite3.Connection, tables: list[str]) -> dict[str, tuple[int, int]]:
    lo, hi = None, None
    for t in tables:
        s, e = con.execute(f"SELECT min(start), max(start) FROM [{t}] WHERE start > 0").fetchone()
        if s is not None:
            lo = s if lo is None else min(lo, s)
            hi = e if hi is None else max(hi, e)
    return {"all": (lo, hi + 1)} if lo is not None else {}


def name_column(con: sqlite3.Connection, table: str) -> str | None:
    cols = {r[1] for r in con.execute(f"PRAGMA table_info([{table}])")}
    return "nameId" if "nameId" in cols else None


def window_counts(con: sqlite3.Connection, tables: list[str], lo: int, hi: int) -> dict:
    out: dict = {"rows": {}}
    for t in tables:
        n = con.execute(f"SELECT count(*) FROM [{t}] WHERE start >= ? AND start < ?", (lo, hi)).fetchone()[0]
        if n:
            out["rows"][t] = n
    if KERNEL in tables:
        k = con.execute(
            f"SELECT count(*), sum(end - start), count(graphNodeId) FROM {KERNEL} WHERE start >= ? AND start < ?",
            (lo, hi),
        ).fetchone()
        out["kernels"], out["kernel_gpu_ns"], out["kernels_in_graphs"] = k[0], k[1] or 0, k[2]
    else:
        out["kernels"] = 0
    if RUNTIME in tables:
        out["top_cuda_api"] = [
            [n, c]
            for n, c in con.execute(
                f"SELECT s.value, count(*) FROM {RUNTIME} r JOIN StringIds s ON s.id = r.nameId "
                "WHERE r.start >= ? AND r.start < ? GROUP BY 1 ORDER BY 2 DESC LIMIT 15",
                (lo, hi),
            )
        ]
    if "OSRT_API" in tables:
        out["top_osrt"] = [
            [n, c]
            for n, c in con.execute(
                "SELECT s.value, count(*) FROM OSRT_API r JOIN StringIds s ON s.id = r.nameId "
                "WHERE r.start >= ? AND r.start < ? GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
                (lo, hi),
            )
        ]
    if "PROFILER_OVERHEAD" in tables:
        out["profiler_overhead"] = [
            [n, c, d]
            for n, c, d in con.execute(
                "SELECT s.value, count(*), sum(p.end - p.start) FROM PROFILER_OVERHEAD p JOIN StringIds s "
                "ON s.id = p.nameId WHERE p.start >= ? AND p.start < ? GROUP BY 1 ORDER BY 3 DESC",
                (lo, hi),
            )
        ]
    return out


def analyze(path: str, iters: dict[str, int] | None = None) -> dict:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = tables_with_start(con)
    totals = {t: con.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in tables}
    wins, how = marker_windows(con), "markers"
    if not wins:
        wins, how = nvtx_windows(con), "nvtx"
    if not wins:
        wins, how = whole_window(con, tables), "all"
    result: dict = {
        "sqlite": path,
        "window_source": how,
        "table_rows": {t: n for t, n in totals.items() if n},
        "windows": {},
    }
    meta = {}
    if has_table(con, "META_DATA_CAPTURE"):
        for name, value in con.execute("SELECT name, value FROM META_DATA_CAPTURE WHERE name NOT LIKE '%ENVIRONMENT%'"):
            meta.setdefault(name, value)
    keep = ("CUDA_GRAPH_TRACE", "FLUSH", "OS_RUNTIME", "COLLECT_CUDA", "COLLECT_NVTX", "FORK", "SKIP_SOME")
    result["capture_settings"] = {k: v for k, v in meta.items() if any(x in k for x in keep)}
    ranges = nvtx_ranges(con)
    result["nvtx_iteration_ranges"] = sum(1 for t, _, _ in ranges if t.startswith("iteration "))
    for b, (lo, hi) in sorted(wins.items(), key=lambda kv: kv[1][0]):
        w = window_counts(con, tables, lo, hi)
        w["window_ns"] = [lo, hi]
        n = (iters or {}).get(b) if b != "all" else sum((iters or {}).values())
        if n:
            w["iterations"] = n
            w["kernels_per_iteration"] = w["kernels"] / n
            w["cuda_api_per_iteration"] = w["rows"].get(RUNTIME, 0) / n
            w["osrt_per_iteration"] = w["rows"].get("OSRT_API", 0) / n
        result["windows"][b] = w
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sqlite")
    p.add_argument("--iters", default="", help="B:N,... timed iterations per batch size")
    a = p.parse_args(argv)
    iters = {k: int(v) for k, v in (x.split(":") for x in a.iters.split(",") if x)}
    json.dump(analyze(a.sqlite, iters), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
