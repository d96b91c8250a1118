"""The serving stage with real processes standing in for `vllm serve`, its client and nsys (tests/serving/).

A stand-in server is a real HTTP server that streams fake completions, or fails the way a server does: it exits
before it is ready, never answers (ignoring SIGINT and SIGTERM, with a child process), or finds its port taken.
After every run, failed or not, no process of the server's group is left and no run record is written on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import DATA, ROOT, snakemake

from llmprof.capture.loadgen import RequestResult, arrival_times, result_document
from llmprof.capture.model import fetch_model
from llmprof.capture.serve import (
    claim_port,
    client_command,
    serve_baseline,
    serve_profile,
    server_command,
    serving_record,
)
from llmprof.cli import main
from llmprof.common.config import expand_sweeps, load, run_spec
from llmprof.common.errors import ConfigError, InputError, LlmprofError
from llmprof.common.records import RunSpec, load_run_record

SERVING = ROOT / "tests" / "serving"
RESULT = DATA / "vllm_serve_h200_rate32" / "client-result.json"
#: A real capture of vLLM engine steps, standing in for what nsys would export from the server.
STEP_CAPTURE = ROOT / "resources" / "samples" / "vllm-llama1b-bs16" / "profile.sqlite"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve-model") / "tiny"
    fetch_model(
        "tiny", {"source": "synthetic", "architecture": str(ROOT / "resources/architectures/tiny-llama.json")}, folder
    )
    return folder


@pytest.fixture()
def pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the stand-in server writes its pids into (its own, and its child's when it has one)."""
    path = tmp_path / "server.pids"
    monkeypatch.setenv("FAKE_SERVER_PIDS", str(path))
    monkeypatch.setenv("FAKE_SERVER_CALLS", str(tmp_path / "server.calls"))
    return path


def spec(behaviour: str = "ok", **serve: Any) -> RunSpec:
    settings = {
        "client": "builtin",
        "num_prompts": 6,
        "request_rate": 40,
        "warmup_requests": 2,
        "ready_timeout_s": 20,
        "stop_timeout_s": 1,
        "server_command": [sys.executable, str(SERVING / "fake_server.py"), "--behaviour", behaviour],
        **serve,
    }
    entry = {"model": "tiny", "mode": "serve", "workload": {"input_len": 8, "output_len": 5, "seed": 3}}
    return run_spec("srv", {**entry, "serve": settings})


def running(pids_file: Path) -> list[int]:
    """The stand-in's processes that are still running (zombies count as gone)."""
    alive = []
    for pid in map(int, pids_file.read_text().split()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def test_baseline_drives_the_load_and_records_latency_percentiles(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline" / "run.json"
    record = serve_baseline(spec(), model_dir, out)
    assert load_run_record(out) == record
    serving = record["serving"]
    assert serving["client"] == "builtin" and serving["completed"] == 6 and serving["failed"] == 0
    assert serving["total_input_tokens"] == 6 * 8 and serving["total_output_tokens"] == 6 * 5
    for metric in ("ttft", "tpot", "itl", "e2el"):
        p50, p90, p99 = (serving[metric][k] for k in ("p50_ms", "p90_ms", "p99_ms"))  # type: ignore[literal-required]
        assert p50 is not None and p90 is not None and p99 is not None and 0 < p50 <= p90 <= p99, metric
    assert serving["itl"]["p50_ms"] >= 1.0  # the stand-in waits 2 ms between tokens
    assert record["iterations"][0]["latency_s"] == serving["duration_s"] and len(record["warmup_latency_s"]) == 2
    assert record["output_tokens_per_s"] == pytest.approx(serving["output_tokens_per_s"])
    assert not pids.with_name("server.calls").exists()  # untraced: the capture range is never opened
    assert running(pids) == []
    assert (out.parent / "run.server.log").read_text().startswith("$ ")


def test_profile_runs_the_server_under_nsys_and_the_client_opens_the_capture(
    model_dir: Path, pids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in nsys loses its report when it is signalled itself: the stage stops the server, not nsys."""
    monkeypatch.setenv("FAKE_NSYS_EXPORT", str(STEP_CAPTURE))
    out = tmp_path / "profile"
    record = serve_profile(spec(), model_dir, out, nsys=str(SERVING / "fake_nsys.py"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "client-result.json",
        "client.log",
        "profile.nsys-rep",
        "run.json",
        "server.log",
        "spec.json",
    ]
    assert record["profiled"] and record["nsys"]["kernels_captured"] > 0
    assert "--capture-range=cudaProfilerApi" in record["nsys"]["arguments"]
    server_line = (out / "server.log").read_text().splitlines()[0]
    assert "fake_nsys.py profile --capture-range=cudaProfilerApi" in server_line
    assert "--profiler-config" in server_line and '{"profiler": "cuda"}' in server_line
    assert pids.with_name("server.calls").read_text().split() == ["/start_profile", "/stop_profile"]
    assert running(pids) == []


def test_vllm_client_result_format_becomes_the_record(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    standin = [sys.executable, str(SERVING / "vllm_bench_standin.py")]
    settings = spec(client="vllm", client_command=standin, num_prompts=24)  # the real result's load
    record = serve_baseline(settings, model_dir, tmp_path / "run.json")
    serving, result = record["serving"], json.loads(RESULT.read_text())
    ttft = {f"{key}_ms": result[f"{key}_ttft_ms"] for key in ("mean", "p50", "p90", "p99")}
    assert serving["ttft"] == ttft and ttft["p99_ms"] == pytest.approx(28.229, abs=1e-3)
    assert serving["tpot"]["p99_ms"] == result["p99_tpot_ms"] and serving["itl"]["p90_ms"] == result["p90_itl_ms"]
    assert serving["request_throughput_per_s"] == result["request_throughput"]
    assert serving["output_tokens_per_s"] == result["output_throughput"]
    assert serving["num_prompts"] == serving["completed"] == 24
    assert (
        serving["duration_s"] == result["duration"] and record["output_tokens"] == result["total_output_tokens"] == 384
    )
    assert running(pids) == []


def test_server_that_exits_before_ready_is_named_with_its_log(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with pytest.raises(LlmprofError, match=r"the server exited before it was ready \(exit 1\):.*CUDA out of memory"):
        serve_baseline(spec("exit-early"), model_dir, out)
    assert not out.exists() and running(pids) == []


def test_server_that_never_answers_times_out_and_is_killed(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with pytest.raises(LlmprofError, match=r"did not answer http://127.0.0.1:\d+/v1/models within 1.5 s.*compiling"):
        serve_baseline(spec("hang", ready_timeout_s=1.5), model_dir, out)
    assert len(pids.read_text().split()) == 2  # the server and its child, both ignoring SIGTERM until SIGKILL
    assert not out.exists() and running(pids) == []


def test_port_already_bound_is_a_clear_error(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LlmprofError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve_baseline(spec(port=port), model_dir, tmp_path / "run.json")
    assert not (tmp_path / "run.json").exists() and not pids.exists()  # refused before any server started


def test_client_that_fails_stops_the_server(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    failing = [sys.executable, str(SERVING / "failing_client.py")]
    out = tmp_path / "profile"
    with pytest.raises(LlmprofError, match=r"the load client failed \(exit 2\):.*ServerDisconnectedError"):
        serve_profile(spec(client_command=failing), model_dir, out, nsys=str(SERVING / "fake_nsys.py"))
    assert not out.exists() and running(pids) == []
    assert not list(tmp_path.glob(".profile.partial-*"))


def test_cli_error_is_one_line(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    entry = {key: value for key, value in spec("exit-early").items() if key not in ("run",)}
    args = ["baseline", "srv", "--spec", json.dumps(entry), "--model", str(model_dir), "-o", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: run srv: the server exited before it was ready")
    assert running(pids) == []


def test_serve_mode_needs_the_vllm_hook() -> None:
    with pytest.raises(ConfigError, match="capture_mode"):
        run_spec("srv", {"model": "m", "mode": "serve", "capture_mode": "in_process"})
    with pytest.raises(ConfigError, match="the serving stage needs mode serve"):
        serve_baseline(run_spec("srv", {"model": "m"}), Path("nowhere"), Path("nowhere.json"))


def test_commands_carry_the_engine_and_the_load(tmp_path: Path) -> None:
    settings = run_spec(
        "srv",
        {
            "model": "m",
            "mode": "serve",
            "engine": {"enforce_eager": True, "max_model_len": 512},
            "workload": {"input_len": 64, "output_len": 16, "seed": 7},
            "serve": {
                "request_rate": 2.5,
                "max_concurrency": 4,
                "num_prompts": 20,
                "extra_args": ["--max-num-seqs", "8"],
            },
        },
    )
    server = server_command(settings, tmp_path, 8123, profile=True)
    assert server[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", str(tmp_path)]
    assert {"--enforce-eager", "--max-model-len", "512", "--port", "8123", "--served-model-name", "m"} <= set(server)
    assert server[-4:] == ["--max-num-seqs", "8", "--profiler-config", '{"profiler": "cuda"}']
    assert "--profiler-config" not in server_command(settings, tmp_path, 8123, profile=False)
    client = client_command(settings, "http://127.0.0.1:8123", tmp_path, tmp_path / "r.json", profile=True)
    text = " ".join(client)
    for part in (
        "bench serve",
        "--dataset-name random",
        "--random-input-len 64",
        "--random-output-len 16",
        "--num-prompts 20",
        "--seed 7",
        "--request-rate 2.5",
        "--max-concurrency 4",
        "--ignore-eos",
        "--metric-percentiles 50,90,99",
        f"--tokenizer {tmp_path}",
        "--profile",
    ):
        assert part in text, part


def test_serving_record_refuses_failures_and_foreign_files(tmp_path: Path) -> None:
    settings = spec()
    result = json.loads(RESULT.read_text())
    with pytest.raises(LlmprofError, match=r"2 of 6 requests failed \(first error: HTTP 500\)"):
        serving_record({**result, "failed": 2, "errors": ["", "HTTP 500"]}, settings, RESULT)
    del result["duration"]
    with pytest.raises(InputError, match="not a serving benchmark result .duration is missing"):
        serving_record(result, settings, RESULT)


def test_arrivals_are_poisson_and_seeded() -> None:
    a = arrival_times(2000, 4.0, seed=1)
    assert a == arrival_times(2000, 4.0, seed=1) and a != arrival_times(2000, 4.0, seed=2)
    assert a[0] == 0 and a == sorted(a)
    assert a[-1] / (len(a) - 1) == pytest.approx(0.25, rel=0.1)  # mean gap 1 / rate
    assert arrival_times(3, None, seed=1) == [0.0, 0.0, 0.0]


def test_metrics_follow_vllm_bench_definitions() -> None:
    results = [
        RequestResult(prompt_len=8, success=True, ttft=0.1, itl=[0.01, 0.03], latency=0.14, output_tokens=3),
        RequestResult(prompt_len=8, success=True, ttft=0.3, itl=[0.02, 0.02], latency=0.34, output_tokens=3),
        RequestResult(prompt_len=8, error="HTTP 500"),
    ]
    document = result_document(results, duration=2.0)
    assert document["completed"] == 2 and document["failed"] == 1 and document["errors"][2] == "HTTP 500"
    assert document["request_throughput"] == 1.0 and document["output_throughput"] == 3.0
    assert document["median_ttft_ms"] == pytest.approx(200) and document["p50_ttft_ms"] == pytest.approx(200)
    assert document["mean_tpot_ms"] == pytest.approx(20)  # (latency - ttft) / (tokens - 1) for each request
    assert document["p99_itl_ms"] == pytest.approx(29.7)  # linear percentile over every gap of every request
    assert document["mean_e2el_ms"] == pytest.approx(240)


def test_gpu_serving_study_is_a_request_rate_sweep_in_the_dag(cli_env: dict[str, str], tmp_path: Path) -> None:
    for config in ("serve.yaml", "serve-builtin.yaml"):
        args = ["-n", "--quiet", "rules", "--configfile", str(ROOT / "tests" / "gpu" / config)]
        result = snakemake(args, cli_env, tmp_path)
        assert result.returncode == 0, result.stderr
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
        assert counts["fetch_model"] == "1" and counts["compare_runs"] == "1", config
        assert counts["profile_run"] == counts["baseline_run"] == counts["render_report"] == "3", config
    expanded = expand_sweeps(load(ROOT / "tests" / "gpu" / "serve.yaml"))["runs"]
    assert sorted(expanded) == ["serve-rate2", "serve-rate32", "serve-rate8"]
    assert {run_spec(name, entry)["serve"]["client"] for name, entry in expanded.items()} == {"vllm"}


def test_client_that_outlasts_its_timeout_is_stopped(model_dir: Path, pids: Path, tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(LlmprofError, match=r"the load client did not finish within 1 s \(serve.client_timeout_s\)"):
        serve_baseline(spec(client_command=sleeper, client_timeout_s=1), model_dir, tmp_path / "run.json")
    assert not (tmp_path / "run.json").exists() and running(pids) == []


def test_serving_workflow_end_to_end_with_stand_ins(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The whole DAG of a two-rate serving sweep: model, profile and baseline (stand-in server, nsys and the
    built-in client), export (the stand-in nsys gives a real export of vLLM engine steps), extract, figures,
    reports, provenance and the study."""
    base = {
        "model": "tiny",
        "mode": "serve",
        "workload": {"input_len": 8, "output_len": 5},
        "serve": {
            "client": "builtin",
            "num_prompts": 6,
            "warmup_requests": 1,
            "stop_timeout_s": 5,
            "server_command": [sys.executable, str(SERVING / "fake_server.py")],
        },
    }
    config = {
        "models": {
            "tiny": {"source": "synthetic", "architecture": str(ROOT / "resources/architectures/tiny-llama.json")}
        },
        "sweeps": {"srv": {"base": base, "over": {"serve.request_rate": [20, 80]}}},
        "nsys": {"executable": str(SERVING / "fake_nsys.py")},
    }
    path = tmp_path / "serve.yaml"
    path.write_text(json.dumps(config))
    env = {**cli_env, "FAKE_NSYS_EXPORT": str(STEP_CAPTURE)}
    result = snakemake(["--cores", "1", "--configfile", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = tmp_path / "results"
    for run in ("srv-rate20", "srv-rate80"):
        traced = load_run_record(results / run / "profile" / "run.json")
        untraced = load_run_record(results / run / "baseline" / "run.json")
        assert traced["serving"]["completed"] == untraced["serving"]["completed"] == 6
        assert "## Serving: latency and the GPU behind it" in (results / run / "report" / "report.md").read_text()
    study = (results / "study" / "report.md").read_text()
    assert "| TTFT p99 |" in study and "latency_throughput" in (results / "study" / "findings.json").read_text()


def test_loadgen_without_a_profiling_server_is_one_error_line(tmp_path: Path) -> None:
    port = claim_port(0)  # free, and nobody listens there
    args = ["loadgen", "--base-url", f"http://127.0.0.1:{port}", "--model", "m", "--num-prompts", "1"]
    args += ["--input-len", "4", "--output-len", "2", "--vocab-size", "64", "--profile", "-o", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"Error: http://127.0.0.1:{port}/start_profile:" in result.output and "--profiler-config" in result.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stage_stopped_by_a_signal_stops_the_server(
    signum: int, model_dir: Path, pids: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A scheduler's time limit (SIGTERM) or a lost session (SIGHUP) mid-run, signalled twice: no server left, no
    record, one line."""
    entry = {key: value for key, value in spec("hang", ready_timeout_s=60).items() if key != "run"}
    out = tmp_path / "r.json"
    args = ["baseline", "srv", "--spec", json.dumps(entry), "--model", str(model_dir), "-o", str(out), "--quiet"]
    env = {**os.environ, "PATH": cli_env["PATH"]}  # with the stand-in's pid file, set by the fixture
    stage = subprocess.Popen([sys.executable, "-m", "llmprof", *args], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (pids.exists() and len(pids.read_text().split()) == 2):
        time.sleep(0.1)
    assert len(running(pids)) == 2  # the server and its child, both ignoring SIGTERM
    stage.send_signal(signum)
    time.sleep(0.3)
    stage.send_signal(signum)  # a second one, while the server is being stopped, must not cut that short
    _, stderr = stage.communicate(timeout=60)
    assert stage.returncode == 1 and stderr.count("\n") == 1
    assert f"stopped by {signal.Signals(signum).name}; the server was stopped" in stderr
    assert running(pids) == [] and not out.exists() and not list(tmp_path.glob("*.partial*"))


def test_stage_killed_outright_takes_the_server_with_it(
    model_dir: Path, pids: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """SIGKILL reaches no handler: the server, in its own session, still ends (SIGTERM on its parent's death)."""
    entry = {key: value for key, value in spec("slow-start", ready_timeout_s=60).items() if key != "run"}
    args = ["baseline", "srv", "--spec", json.dumps(entry), "--model", str(model_dir), "-o", str(tmp_path / "r.json")]
    env = {**os.environ, "PATH": cli_env["PATH"]}
    stage = subprocess.Popen([sys.executable, "-m", "llmprof", *args, "--quiet"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pids.exists():
        time.sleep(0.1)
    assert len(running(pids)) == 1
    stage.kill()
    stage.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running(pids):
        time.sleep(0.1)
    assert running(pids) == []
