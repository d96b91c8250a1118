"""Serving stage: ``vllm serve`` under a steady load, captured by nsys (traced) or not (baseline).

The server runs in its own process group, under ``nsys profile`` for the traced run
(the profile stage's capture range and flags, with ``--profiler-config {"profiler": "cuda"}``
on the server so that ``/start_profile`` calls cudaProfilerStart in the engine process).
The stage waits for ``/v1/models`` to answer, sends warmup requests outside the capture,
then runs the load client, which opens the capture right before the load and closes it
right after (``vllm bench serve --profile`` does the same), so the capture holds the load
and not the client's own start. The server is stopped in every case: on success SIGINT to
the server process itself (as Ctrl-C would; nsys, not signalled, writes its report once
the server has exited), on failure SIGTERM to its process group and descendants, SIGKILL
to whatever is left after ``serve.stop_timeout_s``. The stage itself stopped by SIGTERM or
SIGHUP (a scheduler's time limit, a cancelled job) stops the server the same way before it
exits. The run record is written only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from llmprof.capture.loadgen import METRICS, PERCENTILES, stream_completion
from llmprof.capture.model import model_path
from llmprof.capture.profile import WorkloadError, log_tail, nsys_arguments, nsys_record
from llmprof.capture.workload import (
    WORKLOAD_ENV,
    gpu_summary,
    now_utc,
    run_record,
    synthetic_prompts,
    versions_record,
    vocab_size,
)
from llmprof.common.errors import ConfigError, InputError
from llmprof.common.outputs import staged_directory, staged_file, write_json
from llmprof.common.records import (
    LatencyPercentiles,
    RunRecord,
    RunSpec,
    ServingRecord,
    load_json,
)
from llmprof.common.version import package_version
from llmprof.nsys.convert import nsys_executable

#: vLLM's command line, run by this interpreter (the ``vllm`` script need not be on PATH).
VLLM_CLI = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
KILL_WAIT_S = 10.0
POLL_S = 0.2


class ServeError(WorkloadError):
    """The server or the load client failed: the server never got ready, or the load did not complete."""


# ports and processes


def claim_port(port: int) -> int:
    """``port`` when it is free on 127.0.0.1 (a free one when 0); ServeError when it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServeError(
                f"port {port} on 127.0.0.1 is already in use ({exc.strerror}); "
                "set serve.port to a free port, or to 0 to pick one"
            ) from exc
        return int(probe.getsockname()[1])


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0]


def live_processes(pgid: int, root: int, known: set[int]) -> set[int]:
    """Processes still running (not zombies) of group ``pgid``, descendants of ``root``, or in ``known``."""
    table = {int(p.name): s for p in Path("/proc").iterdir() if p.name.isdigit() and (s := _stat(int(p.name)))}
    found = {pid for pid, (_, group, _) in table.items() if group == pgid} | (known & set(table))
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier += children
    return {pid for pid in found if pid in table and table[pid][2] not in ("Z", "X")}


def _signal(pgid: int, pids: set[int], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop_processes(process: subprocess.Popen[bytes], first: int, grace_s: float) -> None:
    """Stop a process started in its own session, with its group and descendants: ``first``, then SIGKILL."""
    pgid, known = process.pid, {process.pid}
    for signum, wait_s in ((first, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        alive = live_processes(pgid, process.pid, known)
        if not alive:
            break
        known |= alive
        _signal(pgid, alive, signum)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()
            still = live_processes(pgid, process.pid, known)
            if not still:
                break
            known |= still  # descendants met while stopping, kept after their parent is gone
            time.sleep(POLL_S)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_WAIT_S)


def with_pid_file(pid_file: Path, command: list[str]) -> list[str]:
    """``command`` run by a shell that first writes its pid to ``pid_file`` and then becomes the command (exec keeps
    the pid): how the server's own process is known when nsys stands between it and the stage."""
    return ["/bin/sh", "-c", 'echo $$ > "$1"; shift; exec "$@"', "sh", str(pid_file), *command]


def stop_server(process: subprocess.Popen[bytes], pid_file: Path, grace_s: float) -> None:
    """Stop the server after a successful load: SIGINT to the server itself, as Ctrl-C would, and wait for ``process``.

    Under nsys, ``process`` is nsys: it writes its report once the server has exited, and a signal of its own could
    cut that short, so nsys is left alone for ``grace_s``; then everything still running is stopped.
    """
    try:
        server = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        server = process.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(server, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    stop_processes(process, signal.SIGTERM, KILL_WAIT_S)  # what is left: nothing, when the server and nsys ended


@contextlib.contextmanager
def stopped_by_signals_as_errors(run: str) -> Iterator[None]:
    """SIGTERM and SIGHUP raise ServeError while the server runs, so its ``finally`` stops the server's process group:
    a stage killed by a scheduler's time limit leaves no server holding the GPU. Outside the main thread, as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        for ignored in previous:  # once: a second signal must not cut short the stopping of the server
            signal.signal(ignored, signal.SIG_IGN)
        raise ServeError(f"run {run}: stopped by {signal.Signals(signum).name}; the server was stopped, no run kept")

    previous: dict[signal.Signals, Any] = {}
    for caught in (signal.SIGTERM, signal.SIGHUP):
        previous[caught] = signal.signal(caught, stop)
    try:
        yield
    finally:
        for caught, handler in previous.items():
            signal.signal(caught, handler)


#: prctl(PR_SET_PDEATHSIG, ...): the signal Linux sends a process when the thread that started it ends.
PR_SET_PDEATHSIG = 1
#: libc's prctl, looked up here: the child must not load libraries between fork and exec.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _ending_with(stage: int) -> Callable[[], None] | None:
    """What the child runs before exec: SIGTERM to it when the stage ends, even by SIGKILL, which no handler sees.

    The server (or nsys, which then stops the server) shuts down instead of holding the GPU as an orphan. A stage
    gone before the child could ask for that ends the child at once. None off Linux.
    """
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def end_with_the_stage() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != stage:
            os.kill(os.getpid(), signal.SIGTERM)

    return end_with_the_stage


def start_process(command: list[str], log: IO[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (its own process group), its output into ``log``; on Linux it gets
    SIGTERM should the stage die without stopping it."""
    log.write("$ " + shlex.join(command) + "\n")
    log.flush()
    try:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **WORKLOAD_ENV},
            start_new_session=True,
            preexec_fn=_ending_with(os.getpid()),
        )
    except OSError as exc:
        raise ServeError(f"{command[0]}: cannot be started ({exc.strerror or exc})") from exc


# the server


def server_command(spec: RunSpec, path: Path, port: int, *, profile: bool) -> list[str]:
    """``vllm serve`` (or the configured server command) with the run's engine settings."""
    engine, serve = spec["engine"], spec["serve"]
    command = [*(serve["server_command"] or [*VLLM_CLI, "serve"]), str(path), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--served-model-name", spec["model"], "--dtype", engine["dtype"]]
    command += ["--tensor-parallel-size", str(engine["tensor_parallel_size"])]
    command += ["--gpu-memory-utilization", str(engine["gpu_memory_utilization"])]
    command += ["--max-model-len", str(engine["max_model_len"]), "--seed", str(engine["seed"])]
    command += ["--enforce-eager"] if engine["enforce_eager"] else []
    command += serve.get("extra_args", [])
    return command + (["--profiler-config", json.dumps({"profiler": "cuda"})] if profile else [])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - the local server's URL
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def wait_ready(process: subprocess.Popen[bytes], base_url: str, timeout_s: float, log: Path, run: str) -> float:
    """Seconds until the server answers ``/v1/models``; ServeError if it exits first or takes too long."""
    started = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise ServeError(f"run {run}: the server exited before it was ready (exit {code}): {log_tail(log)}")
        if _answers(f"{base_url}/v1/models"):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise ServeError(
                f"run {run}: the server did not answer {base_url}/v1/models within {timeout_s:g} s "
                f"(serve.ready_timeout_s): {log_tail(log) or 'its log is empty'}"
            )
        time.sleep(POLL_S)


def warm_up(spec: RunSpec, base_url: str, vocab_size: int) -> list[float]:
    """Warmup requests one after another, outside the capture; their latencies (s)."""
    workload, count = spec["workload"], spec["serve"]["warmup_requests"]
    prompts = synthetic_prompts(count, workload["input_len"], vocab_size, workload["seed"] + 1)
    latencies = []
    for prompt in prompts:
        result = stream_completion(base_url, spec["model"], prompt, workload["output_len"])
        if not result.success:
            raise ServeError(f"run {spec['run']}: a warmup request failed: {result.error}")
        latencies.append(result.latency)
    return latencies


# the client


def client_command(spec: RunSpec, base_url: str, path: Path, result: Path, *, profile: bool) -> list[str]:
    """The load client's command: ``vllm bench serve`` or ``llmprof loadgen``, with the run's load."""
    serve, workload = spec["serve"], spec["workload"]
    load = ["--num-prompts", str(serve["num_prompts"]), "--seed", str(workload["seed"])]
    load += ["--request-rate", str(serve["request_rate"])] if serve["request_rate"] is not None else []
    load += ["--max-concurrency", str(serve["max_concurrency"])] if serve["max_concurrency"] is not None else []
    load += ["--profile"] if profile else []
    lengths = (str(workload["input_len"]), str(workload["output_len"]))
    if serve["client"] == "builtin":
        prefix = serve["client_command"] or [sys.executable, "-m", "llmprof", "loadgen"]
        own = ["--input-len", lengths[0], "--output-len", lengths[1], "--vocab-size", str(vocab_size(path))]
        return [*prefix, "--base-url", base_url, "--model", spec["model"], *own, *load, "-o", str(result)]
    prefix = serve["client_command"] or [*VLLM_CLI, "bench", "serve"]
    own = ["--backend", "openai", "--base-url", base_url, "--model", spec["model"], "--tokenizer", str(path)]
    own += ["--dataset-name", "random", "--random-input-len", lengths[0], "--random-output-len", lengths[1]]
    own += ["--ignore-eos", "--temperature", "0", "--disable-tqdm", "--num-warmups", "0", "--save-result"]
    own += ["--result-dir", str(result.parent), "--result-filename", result.name]
    own += ["--percentile-metrics", ",".join(METRICS), "--metric-percentiles", ",".join(map(str, PERCENTILES))]
    return [*prefix, *own, *load]


def run_client(command: list[str], log: Path, timeout_s: float, run: str) -> None:
    """Run the load client to its end; ServeError when it fails or outlasts ``timeout_s``."""
    with log.open("w") as handle:
        client = start_process(command, handle)
        try:
            code = client.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            stop_processes(client, signal.SIGTERM, KILL_WAIT_S)
    if code is None:
        raise ServeError(f"run {run}: the load client did not finish within {timeout_s:g} s (serve.client_timeout_s)")
    if code != 0:
        raise ServeError(f"run {run}: the load client failed (exit {code}): {log_tail(log)}")


# the record


#: Keys a client's result must hold (``vllm bench serve --save-result`` writes them; so does ``llmprof loadgen``).
RESULT_KEYS = ("duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput")


def _percentiles(result: dict[str, Any], metric: str) -> LatencyPercentiles:
    def value(key: str) -> float | None:
        found = result.get(key)
        return float(found) if isinstance(found, (int, float)) else None

    return {
        "mean_ms": value(f"mean_{metric}_ms"),
        "p50_ms": value(f"p50_{metric}_ms") if f"p50_{metric}_ms" in result else value(f"median_{metric}_ms"),
        "p90_ms": value(f"p90_{metric}_ms"),
        "p99_ms": value(f"p99_{metric}_ms"),
    }


def serving_record(result: dict[str, Any], spec: RunSpec, source: Path) -> ServingRecord:
    """The client's result as a record; ServeError when a request failed, InputError when a key is missing."""
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise InputError(f"{source}: not a serving benchmark result ({missing[0]} is missing)")
    serve = spec["serve"]
    failed = int(result.get("failed") or 0)
    if failed or not result["completed"]:
        errors = [e for e in result.get("errors") or [] if e]
        first = f" (first error: {errors[0]})" if errors else ""
        raise ServeError(
            f"run {spec['run']}: {failed} of {serve['num_prompts']} requests failed{first}; see {source.name}"
        )
    duration = float(result["duration"])
    return {
        "client": serve["client"],
        "num_prompts": serve["num_prompts"],
        "completed": int(result["completed"]),
        "failed": failed,
        "request_rate": serve["request_rate"],
        "max_concurrency": serve["max_concurrency"],
        "duration_s": duration,
        "total_input_tokens": int(result["total_input_tokens"]),
        "total_output_tokens": int(result["total_output_tokens"]),
        "request_throughput_per_s": float(result["request_throughput"]),
        "output_tokens_per_s": float(result.get("output_throughput") or result["total_output_tokens"] / duration),
        **{metric: _percentiles(result, metric) for metric in METRICS},  # type: ignore[typeddict-item]
    }


def torch_cuda_version() -> str | None:
    """The CUDA version this interpreter's torch was built with (the one `vllm serve` runs on unless
    serve.server_command replaces it), asked in a child process so that the stage never imports torch; None where
    torch is absent or does not answer."""
    try:
        answer = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.version.cuda or '')"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip() or None


def serving_run_record(
    spec: RunSpec, model_dir: Path, serving: ServingRecord, *, profile: bool, timings: dict[str, Any]
) -> RunRecord:
    """The run record of a serving load: the load is its one iteration; ``timings``: start, ready_s, warmup."""
    gpu, driver = gpu_summary()
    tokens, duration = serving["total_output_tokens"], serving["duration_s"]
    versions = versions_record(
        vllm=package_version("vllm") or "not installed",
        torch=package_version("torch") or "not installed",
        cuda=torch_cuda_version(),
        driver=driver,
    )
    record = run_record(
        spec,
        model_dir,
        profile=profile,
        started_at=timings["started_at"],
        engine_start_s=timings["ready_s"],
        warmup=timings["warmup"],
        iterations=[
            {"index": 0, "latency_s": duration, "output_tokens": tokens, "output_tokens_per_s": tokens / duration}
        ],
        machine=(gpu, versions),
    )
    record["serving"] = serving
    return record


# the stage


def _check_mode(spec: RunSpec) -> None:
    if spec.get("mode") != "serve":
        mode = spec.get("mode", "offline")
        raise ConfigError(f"run {spec['run']}: mode {mode!r}: the serving stage needs mode serve")
    if spec["capture_mode"] != "vllm_hook":
        raise ConfigError(f"run {spec['run']}: mode serve captures through the server's profiler: set vllm_hook")


def serve_load(spec: RunSpec, model_dir: str | Path, work: Path, *, nsys_prefix: list[str] | None) -> RunRecord:
    """Start the server (under ``nsys_prefix`` when given), warm it up, drive the load, stop the server.

    Writes ``server.log``, ``client.log`` and ``client-result.json`` into ``work``; returns the run record. The
    stages (:func:`serve_profile`, :func:`serve_baseline`) check the run's mode first.
    """
    settings, model_dir = spec["serve"], Path(model_dir).resolve()
    path, port = model_path(model_dir), claim_port(settings["port"])
    base_url, profile = f"http://127.0.0.1:{port}", nsys_prefix is not None
    log, result, pid_file = work / "server.log", work / "client-result.json", work / "server.pid"
    command = [*(nsys_prefix or []), *with_pid_file(pid_file, server_command(spec, path, port, profile=profile))]
    timings: dict[str, Any] = {"started_at": now_utc()}
    with stopped_by_signals_as_errors(spec["run"]), log.open("w") as handle:
        server, stopped = start_process(command, handle), False
        try:
            timings["ready_s"] = wait_ready(server, base_url, settings["ready_timeout_s"], log, spec["run"])
            timings["warmup"] = warm_up(spec, base_url, vocab_size(path))
            client = client_command(spec, base_url, path, result, profile=profile)
            run_client(client, work / "client.log", settings["client_timeout_s"], spec["run"])
            stop_server(server, pid_file, settings["stop_timeout_s"])
            stopped = True
        finally:
            if not stopped:
                stop_processes(server, signal.SIGTERM, settings["stop_timeout_s"])
            pid_file.unlink(missing_ok=True)
    serving = serving_record(load_json(result, "the load client"), spec, result)
    return serving_run_record(spec, model_dir, serving, profile=profile, timings=timings)


def serve_profile(
    spec: RunSpec, model_dir: str | Path, out: str | Path, *, nsys: str = "nsys", force: bool = False
) -> RunRecord:
    """The serving load with the server under nsys: ``profile.nsys-rep``, ``run.json``, ``spec.json`` and logs."""
    _check_mode(spec)
    executable = nsys_executable(nsys)
    with staged_directory(Path(out), force, "profile") as stage:
        write_json(stage / "spec.json", spec)
        prefix = [executable, "profile", *nsys_arguments(spec["nsys"]), "-o", str(stage / "profile")]
        record = serve_load(spec, model_dir, stage, nsys_prefix=prefix)
        record["nsys"] = nsys_record(stage / "profile.nsys-rep", spec, executable)
        write_json(stage / "run.json", record)
    return record


def serve_baseline(spec: RunSpec, model_dir: str | Path, out: str | Path, *, force: bool = False) -> RunRecord:
    """The same serving load without nsys and without a capture range: the latencies nsys is compared with.

    The server's and client's logs are kept beside ``out`` (``NAME.server.log``, ``NAME.client.log``).
    """
    _check_mode(spec)
    out = Path(out)
    with staged_file(out, force, "run-record") as partial, tempfile.TemporaryDirectory() as scratch:
        try:
            record = serve_load(spec, model_dir, Path(scratch), nsys_prefix=None)
        finally:
            for name in ("server.log", "client.log"):
                if (Path(scratch) / name).exists():
                    shutil.copyfile(Path(scratch) / name, out.with_name(f"{out.stem}.{name}"))
        write_json(partial, record)
    return record
