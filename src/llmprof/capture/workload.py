"""The instrumented vLLM workload: warmup outside the capture, steady-state generate inside it.

Runs as ``llmprof run SPEC -o run.json``, under ``nsys profile`` (profile stage)
or alone (baseline stage, to measure what nsys costs). vLLM and torch are
imported here only, so the analysis half never needs them.

Capture modes (see config/README.md):
- ``vllm_hook``: vLLM V1 runs its engine core in a separate process, where a
  cudaProfilerStart in the driver would not reach; ``LLM(profiler_config=cuda)``
  makes ``llm.start_profile()`` call it in the worker, and vLLM labels each engine
  step with an NVTX range.
- ``in_process``: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine in this
  process, so ``torch.cuda.profiler.start()`` opens the capture and the driver's
  NVTX ranges (``generate``, ``iteration k``) project onto the GPU work.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np

from llmprof.capture.model import model_path
from llmprof.common.config import config_digest
from llmprof.common.errors import ConfigError, InputError
from llmprof.common.outputs import write_json
from llmprof.common.records import (
    GpuSummary,
    IterationRecord,
    ModelRecord,
    RunRecord,
    RunSpec,
    VersionsRecord,
    WorkloadSettings,
    load_json,
)
from llmprof.common.version import __version__

#: Environment every workload runs with: spawned workers (CUDA cannot fork), no telemetry.
WORKLOAD_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def synthetic_prompts(batch_size: int, input_len: int, vocab_size: int, seed: int) -> list[list[int]]:
    """Seeded random token ids, avoiding the first ids (special tokens in most vocabularies)."""
    low = min(16, vocab_size - 1)
    rng = np.random.default_rng(seed)
    return rng.integers(low, vocab_size, size=(batch_size, input_len)).tolist()  # type: ignore[no-any-return]


def file_prompts(path: Path, batch_size: int) -> list[dict[str, Any]]:
    """The first ``batch_size`` prompts of a JSONL file ({"prompt_token_ids": [...]} or {"prompt": text})."""
    prompts = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such prompts file") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(item, dict) or not ({"prompt_token_ids", "prompt"} & set(item)):
            raise InputError(f'{path}:{number}: expected {{"prompt_token_ids": [...]}} or {{"prompt": text}}')
        prompts.append(item)
        if len(prompts) == batch_size:
            return prompts
    raise InputError(f"{path}: {len(prompts)} prompts, the workload needs batch_size={batch_size}")


def gpu_summary() -> tuple[GpuSummary, str | None]:
    """The machine's GPUs (by nvidia-smi) and the driver version; unknown where nvidia-smi is absent."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        rows = [[f.strip() for f in line.split(",")] for line in result.stdout.strip().splitlines()]
    except (OSError, subprocess.SubprocessError):
        rows = []
    if not rows:
        return {"name": "unknown (nvidia-smi absent)", "count": 0}, None
    return {"name": rows[0][0], "count": len(rows)}, rows[0][1] if len(rows[0]) > 1 else None


def vocab_size(path: Path) -> int:
    """The vocabulary size in the config of the model at ``path``."""
    return int(load_json(path / "config.json", "`llmprof model`")["vocab_size"])


def _prompts(workload: WorkloadSettings, path: Path) -> tuple[list[object], bool]:
    """The batch of prompts as vLLM takes them, and whether any is text (which needs the tokenizer)."""
    from vllm.inputs import TokensPrompt

    vocab = vocab_size(path)
    if workload["prompts"] == "synthetic":
        ids = synthetic_prompts(workload["batch_size"], workload["input_len"], vocab, workload["seed"])
        return [TokensPrompt(prompt_token_ids=p) for p in ids], False
    items = file_prompts(Path(workload["prompts"]), workload["batch_size"])
    prompts = [
        i["prompt"] if "prompt_token_ids" not in i else TokensPrompt(prompt_token_ids=i["prompt_token_ids"])
        for i in items
    ]
    return prompts, any("prompt" in i and "prompt_token_ids" not in i for i in items)


def engine_arguments(spec: RunSpec, path: Path, *, text_prompts: bool, profile: bool) -> dict[str, object]:
    """vLLM's ``LLM(...)`` arguments for the run's engine settings, with the profiler hook when it opens the capture."""
    engine = spec["engine"]
    arguments: dict[str, object] = {
        "model": str(path),
        "skip_tokenizer_init": not text_prompts,
        "dtype": engine["dtype"],
        "tensor_parallel_size": engine["tensor_parallel_size"],
        "gpu_memory_utilization": engine["gpu_memory_utilization"],
        "max_model_len": engine["max_model_len"],
        "enforce_eager": engine["enforce_eager"],
        "seed": engine["seed"],
    }
    if profile and spec["capture_mode"] == "vllm_hook":
        arguments["profiler_config"] = {"profiler": "cuda"}
    return arguments


def _generate(llm: Any, prompts: list[object], sampling: object) -> tuple[float, int]:
    """One generate call over the batch: its latency (s) and the output tokens it produced."""
    started = time.perf_counter()
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outputs)


def _timed_loop(
    llm: Any, prompts: list[object], spec: RunSpec, *, profile: bool
) -> tuple[list[float], list[IterationRecord]]:
    """Warmup latencies, then the steady-state iterations, captured (when ``profile``) and labelled in NVTX."""
    import nvtx
    import torch
    from vllm import SamplingParams

    workload, hook = spec["workload"], spec["capture_mode"] == "vllm_hook"
    sampling = SamplingParams(max_tokens=workload["output_len"], ignore_eos=True, temperature=0.0, detokenize=False)
    with nvtx.annotate("warmup"):
        warmup = [_generate(llm, prompts, sampling)[0] for _ in range(workload["warmup_iters"])]
    if profile:
        llm.start_profile() if hook else torch.cuda.profiler.start()
    iterations: list[IterationRecord] = []
    with nvtx.annotate("generate"):
        for i in range(workload["profile_iters"]):
            with nvtx.annotate(f"iteration {i}"):
                latency, tokens = _generate(llm, prompts, sampling)
            iterations.append(
                {"index": i, "latency_s": latency, "output_tokens": tokens, "output_tokens_per_s": tokens / latency}
            )
    if profile:
        llm.stop_profile() if hook else torch.cuda.profiler.stop()
    return warmup, iterations


def now_utc() -> str:
    """The wall-clock time a record gives, to the second, in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_record(
    spec: RunSpec,
    model_dir: Path,
    *,
    profile: bool,
    started_at: str,
    engine_start_s: float,
    warmup: list[float],
    iterations: list[IterationRecord],
    machine: tuple[GpuSummary, VersionsRecord],
) -> RunRecord:
    """A run's record: its settings and model, timings and throughput, GPU and software versions (``machine``).
    The workload's, and the serving stage's, whose load is its one iteration."""
    total_tokens = sum(i["output_tokens"] for i in iterations)
    total_s = sum(i["latency_s"] for i in iterations)
    gpu, versions = machine
    return {
        "run": spec["run"],
        "profiled": profile,
        "capture_mode": spec["capture_mode"],
        "config_digest": config_digest(spec),
        "spec": spec,
        "model": cast(ModelRecord, load_json(model_dir / "model.json", "`llmprof model`")),
        "engine_start_s": engine_start_s,
        "started_at": started_at,
        "finished_at": now_utc(),
        "warmup_latency_s": warmup,
        "iterations": iterations,
        "output_tokens": total_tokens,
        "output_tokens_per_s": total_tokens / total_s if total_s else None,
        "gpu": gpu,
        "versions": versions,
    }


def versions_record(*, vllm: str, torch: str, cuda: str | None, driver: str | None) -> VersionsRecord:
    """The software a run record names, around the vLLM, torch, CUDA and driver versions given."""
    return {
        "llmprof": __version__,
        "vllm": vllm,
        "torch": torch,
        "cuda": cuda,
        "driver": driver,
        "python": platform.python_version(),
    }


def _engine_machine() -> tuple[GpuSummary, VersionsRecord]:
    """The GPU and software of this process's engine (torch and vLLM are imported here)."""
    import torch
    import vllm

    versions = versions_record(
        vllm=vllm.__version__, torch=torch.__version__, cuda=torch.version.cuda, driver=gpu_summary()[1]
    )
    return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}, versions


def run_workload(spec: RunSpec, model_dir: str | Path, out: str | Path, *, profile: bool) -> RunRecord:
    """Build the engine, warm up, run the steady-state iterations (captured when ``profile``), write run.json.

    Args:
        spec: the run's settings with defaults filled (``llmprof.common.config.run_spec``).
        model_dir: the fetched model folder (with model.json).
        out: the run record to write.
        profile: open and close the capture range around the steady-state iterations.
    """
    mode = spec["capture_mode"]
    if mode not in ("vllm_hook", "in_process"):
        raise ConfigError(f"capture_mode {mode!r}: choose vllm_hook or in_process")
    os.environ.update(WORKLOAD_ENV)
    if mode == "in_process":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # must precede the vLLM import
    import nvtx
    from vllm import LLM

    path = model_path(model_dir)
    prompts, text_prompts = _prompts(spec["workload"], path)
    started_at = now_utc()
    started = time.perf_counter()
    with nvtx.annotate("model_load"):
        llm = LLM(**engine_arguments(spec, path, text_prompts=text_prompts, profile=profile))
    engine_start_s = time.perf_counter() - started
    warmup, iterations = _timed_loop(llm, prompts, spec, profile=profile)
    record = run_record(
        spec,
        Path(model_dir),
        profile=profile,
        started_at=started_at,
        engine_start_s=engine_start_s,
        warmup=warmup,
        iterations=iterations,
        machine=_engine_machine(),
    )
    write_json(Path(out), record)
    return record
