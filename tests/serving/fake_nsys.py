#!/usr/bin/env python3
"""A stand-in for the nsys CLI, enough for the serving stage: ``profile [flags] -o OUT CMD...`` runs CMD as its
child and writes OUT.nsys-rep when CMD ends (a SIGINT or SIGTERM to the stand-in itself ends CMD and loses the
report, as it can with nsys); ``export ... -o OUT REPORT`` writes the export named in $FAKE_NSYS_EXPORT (a real
SQLite export) to OUT when REPORT is one the stand-in wrote, and fails otherwise; ``--version`` prints one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys


def profile(args: list[str]) -> int:
    """Like nsys: the report is written when the application ends; a signal to nsys itself loses it."""
    out = args[args.index("-o") + 1]
    command = args[args.index("-o") + 2 :]
    child = subprocess.Popen(command)

    def interrupted(received: int, _: object) -> None:
        child.send_signal(received)
        child.wait()
        sys.exit(128 + received)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    code = child.wait()
    with open(out + ".nsys-rep", "w") as report:
        report.write(f"stand-in report of {command[0]}\n")
    return code


def export(args: list[str]) -> int:
    """Like nsys: fails on a report it did not write; else writes the export named in $FAKE_NSYS_EXPORT."""
    report = args[-1]
    try:
        with open(report) as handle:
            made_here = handle.read().startswith("stand-in report of ")
    except OSError:
        made_here = False
    if not made_here:
        print(f"cannot open {report}", file=sys.stderr)
        return 1
    shutil.copyfile(os.environ["FAKE_NSYS_EXPORT"], args[args.index("-o") + 1])
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args == ["--version"]:
        print("NVIDIA Nsight Systems version 2025.3.1 (stand-in)")
        return 0
    if args[0] == "profile":
        return profile(args[1:])
    if args[0] == "export":
        return export(args[1:])
    return 2


if __name__ == "__main__":
    sys.exit(main())
