"""Build a large nsys export from a real one: its kernel and CUDA runtime rows replicated with shifted times and ids.

    python benchmarks/make_large_export.py SOURCE.sqlite OUT.sqlite --kernels 10000000 --runtime 10000000

Copy k of a row starts k capture-spans later and its correlation id is offset by k times the id range, so
copies never overlap in time and kernels still join their launching calls. Everything else is the source's.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sqlite3
import time
from pathlib import Path

KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"


def replicate(db: sqlite3.Connection, table: str, target_rows: int, span: int, id_range: int) -> int:
    columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
    base = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    copies = math.ceil(target_rows / base)
    shifted = {
        "start": f"start + c.k * {span}",
        "end": f'"end" + c.k * {span}',
        "correlationId": f"correlationId + c.k * {id_range}",
    }
    select = ", ".join(shifted.get(c, f'"{c}"') for c in columns)
    db.execute("CREATE TEMP TABLE copies (k INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO copies VALUES (?)", [(k,) for k in range(1, copies)])
    db.execute(
        f"INSERT INTO {table} ({', '.join(chr(34) + c + chr(34) for c in columns)}) "
        f"SELECT {select} FROM {table} t, copies c WHERE t.rowid <= {base} ORDER BY c.k, t.rowid"
    )
    db.execute("DROP TABLE copies")
    return base * copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--kernels", type=int, required=True)
    parser.add_argument("--runtime", type=int, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    shutil.copy(args.source, args.out)
    args.out.chmod(0o644)
    with sqlite3.connect(args.out) as db:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        lo, hi = db.execute(
            f'SELECT min(start), max("end") FROM (SELECT start, "end" FROM {KERNEL} '
            f'UNION ALL SELECT start, "end" FROM {RUNTIME})'
        ).fetchone()
        span = hi - lo + 1_000_000
        id_range = 1 + max(db.execute(f"SELECT max(correlationId) FROM {t}").fetchone()[0] for t in (KERNEL, RUNTIME))
        kernels = replicate(db, KERNEL, args.kernels, span, id_range)
        runtime = replicate(db, RUNTIME, args.runtime, span, id_range)
    print(
        f"{args.out}: {kernels:,} kernels, {runtime:,} runtime rows, "
        f"{args.out.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
