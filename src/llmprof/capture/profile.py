"""Profile stage: the workload under ``nsys profile``, limited to the steady state.

``nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop`` records
only between the workload's profiler start and stop, so model loading and warmup
stay out of the capture. The stage fails, leaving nothing behind, when the
workload fails, when nsys writes no report (the capture range never opened), or
when the report holds no kernel (the capture missed the GPU work).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmprof.capture.workload import WORKLOAD_ENV
from llmprof.common.errors import LlmprofError
from llmprof.common.outputs import staged_directory, staged_file, write_json
from llmprof.common.records import NsysRecord, NsysSettings, RunRecord, RunSpec, load_run_record
from llmprof.nsys.convert import nsys_executable, readable_export
from llmprof.nsys.events import count_kernels
from llmprof.nsys.export import open_export

#: Flags that make the capture the steady state only; not configurable.
CAPTURE_RANGE = ["--capture-range=cudaProfilerApi", "--capture-range-end=stop", "--force-overwrite=true"]
LOG_TAIL_LINES = 15


class CaptureError(LlmprofError):
    """The profiled workload ran but its capture is missing or holds no GPU work."""


class WorkloadError(LlmprofError):
    """The workload failed (crash, out of memory, bad model)."""


def nsys_arguments(settings: NsysSettings) -> list[str]:
    """``nsys profile`` flags of a run's ``nsys`` settings (defaults filled)."""
    return [
        *CAPTURE_RANGE,
        f"--trace={settings['trace']}",
        f"--cuda-graph-trace={settings['cuda_graph_trace']}",
        f"--trace-fork-before-exec={'true' if settings['trace_fork_before_exec'] else 'false'}",
        f"--sample={settings['sample']}",
        f"--cpuctxsw={settings['cpuctxsw']}",
        *settings["extra_args"],
    ]


def workload_command(spec_path: Path, model_dir: Path, record: Path, *, profile: bool) -> list[str]:
    """The workload as a command line, run by this interpreter."""
    command = [sys.executable, "-m", "llmprof", "run", str(spec_path), "--model", str(model_dir), "-o", str(record)]
    return command + (["--profile"] if profile else [])


def log_tail(log: Path) -> str:
    """The last lines of a log, joined into one line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip())


def nsys_version(nsys: str) -> str | None:
    try:
        result = subprocess.run([nsys, "--version"], capture_output=True, text=True, check=True, timeout=60)
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def captured_kernels(report: Path, spec: RunSpec, nsys: str) -> int:
    """The number of kernels in a fresh capture; CaptureError when there is no report or no kernel in it."""
    if not report.exists():
        raise CaptureError(
            f"run {spec['run']}: nsys wrote no report: the capture range never opened "
            f"(capture_mode={spec['capture_mode']}: check that the profiler start reaches the engine process)"
        )
    with readable_export(report, nsys=nsys) as sqlite, open_export(sqlite) as export:
        kernels = count_kernels(export)
    if kernels == 0:
        hint = (
            "with capture_mode=in_process VLLM_ENABLE_V1_MULTIPROCESSING=0 must be set before vLLM is imported"
            if spec["capture_mode"] == "in_process"
            else "with capture_mode=vllm_hook the worker must be traced (--trace-fork-before-exec=true)"
        )
        raise CaptureError(f"run {spec['run']}: the capture holds no CUDA kernel: it missed the GPU work; {hint}")
    return kernels


def nsys_record(report: Path, spec: RunSpec, nsys: str) -> NsysRecord:
    """What a profiled run's record says of its capture: nsys's version and arguments, the kernels it caught
    (CaptureError when there is no report or no kernel in it)."""
    kernels = captured_kernels(report, spec, nsys)
    return {"version": nsys_version(nsys), "arguments": nsys_arguments(spec["nsys"]), "kernels_captured": kernels}


def profile_run(
    spec: RunSpec, model_dir: str | Path, out: str | Path, *, nsys: str = "nsys", force: bool = False
) -> RunRecord:
    """Run the workload under nsys and write ``profile.nsys-rep``, ``run.json``, ``spec.json`` and the log.

    Returns:
        The run record, with the nsys version and the number of kernels captured added.
    """
    executable = nsys_executable(nsys)
    model_dir = Path(model_dir).resolve()
    with staged_directory(Path(out), force, "profile") as stage:
        spec_path, record_path, log = stage / "spec.json", stage / "run.json", stage / "profile.log"
        write_json(spec_path, spec)
        command = [
            executable,
            "profile",
            *nsys_arguments(spec["nsys"]),
            "-o",
            str(stage / "profile"),
            *workload_command(spec_path, model_dir, record_path, profile=True),
        ]
        with log.open("w") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            result = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **WORKLOAD_ENV}, check=False
            )
        if result.returncode != 0 or not record_path.exists():
            raise WorkloadError(
                f"run {spec['run']}: the workload under nsys failed (exit {result.returncode}): {log_tail(log)}"
            )
        record = load_run_record(record_path)
        record["nsys"] = nsys_record(stage / "profile.nsys-rep", spec, executable)
        write_json(record_path, record)
    return record


def baseline_run(spec: RunSpec, model_dir: str | Path, out: str | Path, *, force: bool = False) -> RunRecord:
    """The same workload without nsys and without a capture range: the throughput nsys is compared with."""
    out = Path(out)
    with staged_file(out, force, "run-record") as partial, tempfile.TemporaryDirectory() as scratch:
        spec_path, record_path, log = Path(scratch) / "spec.json", Path(scratch) / "run.json", out.with_suffix(".log")
        write_json(spec_path, spec)
        command = workload_command(spec_path, Path(model_dir).resolve(), record_path, profile=False)
        with log.open("w") as handle:
            result = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **WORKLOAD_ENV}, check=False
            )
        if result.returncode != 0 or not record_path.exists():
            raise WorkloadError(
                f"run {spec['run']}: the baseline workload failed (exit {result.returncode}): {log_tail(log)}"
            )
        shutil.copyfile(record_path, partial)
    return load_run_record(out)
