"""Run the nsys overhead ladder on the GPU machine: one process per configuration, in a fixed order, until a deadline.

    python3 benchmarks/overhead/run_ladder.py --deadline-epoch T [--final] [--state-dir /tmp/ovh] [--out DIR]

Each configuration is one process of ladder_workload.py (engine built once; batch sizes 1, 16, 64 timed in turn),
untraced or under ``nsys profile`` with COMMON + the configuration's flags.  The state (what ran, its latencies and
the counts of its capture) lives in --state-dir, so calls on the same machine continue the plan where the last
stopped; every call copies the whole state to --out (ladder_state.json).

A traced run's report is exported to SQLite and counted (analyze_report.py) by a background job that overlaps the
next configuration's engine start; the next workload waits (--hold-file) until that job is done before it runs
its timed calls, so no export runs while latencies are measured.

Order: PLAN below, top to bottom.  Configurations marked reserve (the untraced runs after the traced ones) run
only with --final, after every other one that fits; without --final the call ends when the next one does not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "ladder_workload.py"
ANALYZE = HERE / "analyze_report.py"
BS, ITERS = "1,16,64", "8,20,8"
COMMON = [
    "--capture-range=cudaProfilerApi",
    "--capture-range-end=stop",
    "--sample=none",
    "--cpuctxsw=none",
    "--force-overwrite=true",
]
DEFAULT = ["--trace=cuda,nvtx,osrt", "--cuda-graph-trace=node", "--trace-fork-before-exec=true"]


def cfg(
    name: str,
    mode: str,
    flags: list[str] | None,
    *,
    range_on: bool = True,
    reserve: bool = False,
    fallback: list[str] | None = None,
    note: str = "",
) -> dict:
    return {
        "name": name,
        "mode": mode,
        "flags": flags,
        "range": "on" if range_on else "off",
        "reserve": reserve,
        "fallback": fallback,
        "note": note,
    }


IP, HK = "in_process", "hook"
PLAN = [
    cfg("ip-untraced-1", IP, None, range_on=False, note="no nsys, no profiler start/stop"),
    cfg("ip-range-noprof", IP, None, note="no nsys; cudaProfilerStart/Stop called (capture range opened, no profiler)"),
    cfg("ip-default", IP, DEFAULT, note="llmprof's default nsys settings (config/schema.yaml)"),
    cfg("ip-cuda-node", IP, ["--trace=cuda", "--cuda-graph-trace=node"]),
    cfg("ip-cuda-graph", IP, ["--trace=cuda", "--cuda-graph-trace=graph"]),
    cfg(
        "ip-nvtx",
        IP,
        ["--trace=nvtx"],
        fallback=["--trace=nvtx"],
        note="fallback (if nsys refuses the cudaProfilerApi range without cuda): no capture range",
    ),
    cfg(
        "ip-osrt",
        IP,
        ["--trace=osrt"],
        fallback=["--trace=osrt"],
        note="fallback (if nsys refuses the cudaProfilerApi range without cuda): no capture range",
    ),
    cfg("ip-cuda-nvtx-node", IP, ["--trace=cuda,nvtx", "--cuda-graph-trace=node"]),
    cfg("ip-untraced-2", IP, None, range_on=False, note="untraced, between the traced runs"),
    cfg("hk-untraced-1", HK, None, range_on=False, note="no nsys, no profiler_config, no start/stop"),
    cfg("hk-default", HK, DEFAULT, note="llmprof's default nsys settings"),
    cfg("hk-cuda-nvtx-node", HK, ["--trace=cuda,nvtx", "--cuda-graph-trace=node", "--trace-fork-before-exec=true"]),
    cfg(
        "hk-cuda-nvtx-node-nofork",
        HK,
        ["--trace=cuda,nvtx", "--cuda-graph-trace=node", "--trace-fork-before-exec=false"],
    ),
    cfg("ip-cuda-nvtx-graph-hostonly", IP, ["--trace=cuda,nvtx", "--cuda-graph-trace=graph:host-only"]),
    cfg("ip-cuda-nvtx-node-flush", IP, ["--trace=cuda,nvtx", "--cuda-graph-trace=node", "--cuda-flush-interval=60000"]),
    cfg(
        "ip-default-nofork", IP, ["--trace=cuda,nvtx,osrt", "--cuda-graph-trace=node", "--trace-fork-before-exec=false"]
    ),
    cfg("hk-range-noprof", HK, None, note="no nsys; profiler_config cuda + llm.start_profile()/stop_profile()"),
    cfg(
        "ip-default-osrtbt",
        IP,
        [*DEFAULT, "--osrt-backtrace-threshold=1000000000"],
        note="default with OS-runtime backtraces only for calls over 1 s",
    ),
    cfg(
        "ip-cuda-nvtx-node-2", IP, ["--trace=cuda,nvtx", "--cuda-graph-trace=node"], note="repeat of ip-cuda-nvtx-node"
    ),
    cfg("ip-default-2", IP, DEFAULT, note="repeat of ip-default"),
    cfg("hk-untraced-2", HK, None, range_on=False, reserve=True, note="untraced after the traced runs"),
    cfg("ip-untraced-3", IP, None, range_on=False, reserve=True, note="untraced after the traced runs"),
]


def log(msg: str) -> None:
    print(f"[ladder {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Ladder:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.dir = Path(args.state_dir)
        for sub in ("res", "logs", "rep", "ana"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"configs": {}}
        self.hold = self.dir / "hold"
        self.help_text = Path(args.help_text).read_text() if args.help_text and Path(args.help_text).exists() else ""
        self.call = int(self.state.get("calls", 0)) + 1
        self.state["calls"] = self.call
        self.bg: subprocess.Popen | None = None

    # ---- bookkeeping
    def save(self) -> None:
        self.merge_analyses()
        self.state_path.write_text(json.dumps(self.state, indent=1))
        if self.a.out:
            Path(self.a.out).mkdir(parents=True, exist_ok=True)
            (Path(self.a.out) / "ladder_state.json").write_text(json.dumps(self.state, indent=1))

    def merge_analyses(self) -> None:
        for name, rec in self.state["configs"].items():
            f = self.dir / "ana" / f"{name}.json"
            if "analysis" not in rec and f.exists():
                try:
                    rec["analysis"] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    pass

    def estimate(self, c: dict) -> float:
        traced = c["flags"] is not None
        runs = [r for r in self.state["configs"].values() if r.get("wall_s") and r.get("rc") == 0]
        same = [r["wall_s"] for r in runs if r["mode"] == c["mode"] and (r["flags"] is not None) == traced]
        mode = [r["wall_s"] for r in runs if r["mode"] == c["mode"]]
        pool = same or mode or [r["wall_s"] for r in runs]
        if not pool:
            return self.a.first_estimate  # the first process compiles (torch.compile) from scratch
        return max(pool[-3:]) * 1.1 + 8

    # ---- one configuration
    def command(self, c: dict, flags: list[str] | None, capture_range: bool = True) -> list[str]:
        name = c["name"]
        wl = [
            self.a.python,
            str(WORKLOAD),
            "--model",
            self.a.model,
            "--mode",
            c["mode"],
            "--range",
            c["range"],
            "--bs",
            BS,
            "--iters",
            ITERS,
            "--out",
            str(self.dir / "res" / f"{name}.json"),
        ]
        if self.hold.exists():
            wl += ["--hold-file", str(self.hold)]
        if flags is None:
            return wl
        common = COMMON if capture_range else [f for f in COMMON if not f.startswith("--capture-range")]
        return [self.a.nsys, "profile", *common, *flags, "-o", str(self.dir / "rep" / name), *wl]

    def unsupported(self, flags: list[str] | None) -> list[str]:
        if not flags or not self.help_text:
            return []
        return [f for f in flags if f.split("=")[0] not in self.help_text]

    def run_cmd(self, cmd: list[str], logf: Path, timeout: float) -> tuple[int, float]:
        t0 = time.time()
        with open(logf, "ab") as fh:
            fh.write(("\n$ " + shlex.join(cmd) + "\n").encode())
            fh.flush()
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = -9
        return rc, time.time() - t0

    def run_config(self, c: dict) -> None:
        name = c["name"]
        rec = {k: c[k] for k in ("name", "mode", "flags", "range", "note")}
        rec["call"] = self.call
        rec["order"] = len(self.state["configs"]) + 1
        bad = self.unsupported(c["flags"])
        if bad:
            rec.update(rc=None, skipped=f"flags not in `nsys profile --help`: {bad}")
            self.state["configs"][name] = rec
            log(f"{name}: skipped, unsupported flags {bad}")
            return
        res = self.dir / "res" / f"{name}.json"
        res.unlink(missing_ok=True)
        logf = self.dir / "logs" / f"{name}.log"
        cmd = self.command(c, c["flags"])
        timeout = 420.0 if not self.state["configs"] else 240.0
        rec["started_epoch"] = time.time()
        log(f"{name}: start (est {self.estimate(c):.0f} s): {shlex.join(cmd)}")
        rc, wall = self.run_cmd(cmd, logf, timeout)
        if c["flags"] is not None and c.get("fallback") and not res.exists() and wall < 90:
            rec["first_attempt"] = {"flags": c["flags"], "rc": rc, "wall_s": wall}
            cmd = self.command(c, c["fallback"], capture_range=False)
            rec["flags_used_without_capture_range"] = True
            log(f"{name}: rc {rc} without a result; fallback: {shlex.join(cmd)}")
            rc, wall = self.run_cmd(cmd, logf, timeout)
        rec.update(rc=rc, wall_s=wall, argv=cmd)
        if res.exists():
            rec["workload"] = json.loads(res.read_text())
        rep = self.dir / "rep" / f"{name}.nsys-rep"
        rec["report"] = rep.exists()
        rec["report_bytes"] = rep.stat().st_size if rep.exists() else None
        self.state["configs"][name] = rec
        med = {}
        if "workload" in rec:
            for b, r in rec["workload"]["results"].items():
                lat = sorted(r["latency_s"])
                med[b] = round(1000 * lat[len(lat) // 2], 1)
        log(
            f"{name}: rc {rc}, {wall:.0f} s, report {rec['report']}, median ms {med}, "
            f"engine start {rec.get('workload', {}).get('engine_start_s', 0):.0f} s, "
            f"hold {rec.get('workload', {}).get('hold_wait_s', 0):.1f} s"
        )
        if rep.exists():
            self.start_bg(name, rep)
        self.save()

    def start_bg(self, name: str, rep: Path) -> None:
        self.wait_bg(600)
        iters = ",".join(f"{b}:{n}" for b, n in zip(BS.split(","), ITERS.split(",")))
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--bg-analyze",
            name,
            "--state-dir",
            str(self.dir),
            "--nsys",
            self.a.nsys,
            "--bg-iters",
            iters,
        ]
        with open(self.dir / "logs" / f"{name}.analyze.log", "ab") as fh:
            self.bg = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.hold.write_text(str(self.bg.pid))  # the next workload waits while this process lives

    def wait_bg(self, limit: float) -> None:
        if self.bg is not None:
            try:
                self.bg.wait(timeout=max(1.0, limit))
            except subprocess.TimeoutExpired:
                log("background export still running")
                return
            self.bg = None
            self.hold.unlink(missing_ok=True)

    # ---- the plan
    def go(self) -> None:
        done = set(self.state["configs"])
        todo = [c for c in PLAN if c["name"] not in done and (not self.a.only or c["name"] in self.a.only)]
        main = [c for c in todo if not c["reserve"]]
        reserve = [c for c in todo if c["reserve"]]
        for c in main:
            left = self.a.deadline_epoch - time.time()
            need = self.estimate(c) + (sum(self.estimate(r) for r in reserve) if self.a.final else 0)
            if need > left:
                log(f"{c['name']}: needs ~{need:.0f} s, {left:.0f} s left: stop here")
                break
            self.run_config(c)
        if self.a.final:
            for c in reserve:
                left = self.a.deadline_epoch - time.time()
                if self.estimate(c) > left + 20:
                    log(f"{c['name']}: needs ~{self.estimate(c):.0f} s, {left:.0f} s left: not run")
                    continue
                self.run_config(c)
        self.wait_bg(self.a.deadline_epoch + 15 - time.time())
        self.save()
        self.summary()

    def summary(self) -> None:
        for name, r in self.state["configs"].items():
            med = {}
            for b, x in r.get("workload", {}).get("results", {}).items():
                lat = sorted(x["latency_s"])
                med[b] = round(1000 * lat[len(lat) // 2], 1)
            k = {
                b: round(w.get("kernels_per_iteration", 0)) for b, w in r.get("analysis", {}).get("windows", {}).items()
            }
            print(
                f"{r.get('order')}\t{name}\trc={r.get('rc')}\twall={r.get('wall_s', 0):.0f}\t{med}\tkern/it={k}",
                flush=True,
            )


def bg_analyze(args: argparse.Namespace) -> int:
    d = Path(args.state_dir)
    name = args.bg_analyze
    rep, sq = d / "rep" / f"{name}.nsys-rep", d / "rep" / f"{name}.sqlite"
    out: dict = {}
    try:
        t0 = time.time()
        r = subprocess.run(
            [args.nsys, "export", "--type", "sqlite", "--force-overwrite=true", "-o", str(sq), str(rep)],
            capture_output=True,
            text=True,
        )
        out["export_s"], out["export_rc"] = time.time() - t0, r.returncode
        if sq.exists():
            sys.path.insert(0, str(HERE))
            import analyze_report

            iters = {k: int(v) for k, v in (x.split(":") for x in args.bg_iters.split(",") if x)}
            t1 = time.time()
            out.update(analyze_report.analyze(str(sq), iters))
            out["analyze_s"] = time.time() - t1
        else:
            out["export_tail"] = (r.stdout + r.stderr)[-2000:]
    except Exception as exc:  # noqa: BLE001 -- recorded, never fatal
        out["error"] = repr(exc)
    finally:
        (d / "ana" / f"{name}.json").write_text(json.dumps(out, indent=1))
        sq.unlink(missing_ok=True)
        rep.unlink(missing_ok=True)
        (d / "hold").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", default="/tmp/ovh")
    p.add_argument("--out", default=os.environ.get("OUT"))
    p.add_argument("--deadline-epoch", type=float, default=time.time() + 540)
    p.add_argument("--final", action="store_true", help="also run the reserved untraced runs at the end")
    p.add_argument("--only", type=lambda s: set(s.split(",")), default=None, help="comma-separated names")
    p.add_argument("--model", default="/tmp/model")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--nsys", default="nsys")
    p.add_argument("--help-text", default=None, help="`nsys profile --help` output, to skip unsupported flags")
    p.add_argument("--first-estimate", type=float, default=170.0, help="seconds the first process may take")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--bg-analyze", default=None, help=argparse.SUPPRESS)
    p.add_argument("--bg-iters", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.bg_analyze:
        return bg_analyze(a)
    if a.list:
        for i, c in enumerate(PLAN, 1):
            flags = "untraced" if c["flags"] is None else " ".join(COMMON + c["flags"])
            print(
                f"{i:2d} {c['name']:30s} {c['mode']:10s} range={c['range']} {'reserve ' if c['reserve'] else ''}{flags}"
            )
        return 0
    Ladder(a).go()
    return 0


if __name__ == "__main__":
    sys.exit(main())
