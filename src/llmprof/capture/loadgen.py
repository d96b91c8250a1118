"""A serving load client with nothing but the standard library: ``llmprof loadgen``.

It measures what ``vllm bench serve`` measures, the same way, and writes its result
in the same JSON format, so the serving stage reads either client's result alike.
Prompts are token ids (no tokenizer needed on this side); requests stream from the
OpenAI-compatible ``/v1/completions`` endpoint; arrivals are a Poisson process of
the given rate, seeded. Per request: TTFT is the time to the first streamed chunk
with text, ITL the gaps between later chunks, TPOT ``(latency - TTFT) / (output
tokens - 1)``, E2EL the whole request; output tokens come from the final ``usage``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmprof.capture.workload import synthetic_prompts
from llmprof.common.errors import LlmprofError

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
REQUEST_TIMEOUT_S = 600.0


class LoadError(LlmprofError):
    """The server could not be asked to open or close the capture range."""


@dataclass
class RequestResult:
    """One request as the client saw it (times in seconds)."""

    prompt_len: int
    success: bool = False
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    output_tokens: int = 0
    error: str = ""


def _post(url: str, body: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - a local URL given by the caller


def _chunks(response: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``[DONE]``."""
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


def stream_completion(base_url: str, model: str, prompt: list[int], output_len: int) -> RequestResult:
    """Send one streaming completion and time its tokens as they arrive."""
    result = RequestResult(prompt_len=len(prompt))
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_len,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = last = time.perf_counter()
    try:
        with _post(f"{base_url}/v1/completions", body) as response:
            for chunk in _chunks(response):
                now = time.perf_counter()
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    if result.ttft == 0.0:
                        result.ttft = now - started
                    else:
                        result.itl.append(now - last)
                    last = now
                    result.output_tokens += 1
                if chunk.get("usage"):
                    result.output_tokens = int(chunk["usage"].get("completion_tokens", result.output_tokens))
        result.latency, result.success = last - started, result.ttft > 0
        result.error = "" if result.success else "the stream held no token"
    except (OSError, ValueError, urllib.error.URLError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def arrival_times(num_prompts: int, request_rate: float | None, seed: int) -> list[float]:
    """When each request is sent (s from the start): a Poisson process of ``request_rate``, or all at 0."""
    if request_rate is None:
        return [0.0] * num_prompts
    gaps = np.random.default_rng(seed).exponential(1.0 / request_rate, size=num_prompts)
    return np.concatenate([[0.0], np.cumsum(gaps[1:])]).tolist()  # type: ignore[no-any-return]


def run_load(
    base_url: str,
    model: str,
    prompts: list[list[int]],
    output_len: int,
    arrivals: list[float],
    max_concurrency: int | None,
) -> tuple[list[RequestResult], float]:
    """Send every prompt at its arrival time (at most ``max_concurrency`` in flight); results and duration (s)."""
    results: list[RequestResult | None] = [None] * len(prompts)
    limit: AbstractContextManager[object] = (
        threading.BoundedSemaphore(max_concurrency) if max_concurrency else contextlib.nullcontext()
    )

    def send(index: int) -> None:
        with limit:
            results[index] = stream_completion(base_url, model, prompts[index], output_len)

    started = time.perf_counter()
    threads = []
    for index, arrival in enumerate(arrivals):
        time.sleep(max(0.0, started + arrival - time.perf_counter()))
        thread = threading.Thread(target=send, args=(index,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None], time.perf_counter() - started


def _spread(values: list[float], metric: str) -> dict[str, float]:
    """Mean, median, standard deviation and percentiles in ms, keyed as ``vllm bench serve`` keys them."""
    data = np.asarray(values or [0.0]) * 1000
    spread = {
        f"mean_{metric}_ms": float(np.mean(data)),
        f"median_{metric}_ms": float(np.median(data)),
        f"std_{metric}_ms": float(np.std(data)),
    }
    return spread | {f"p{p}_{metric}_ms": float(np.percentile(data, p)) for p in PERCENTILES}


def result_document(results: list[RequestResult], duration: float) -> dict[str, Any]:
    """The result JSON of a load, with the keys and meaning of ``vllm bench serve --save-result``."""
    done = [r for r in results if r.success]
    inputs, outputs = sum(r.prompt_len for r in done), sum(r.output_tokens for r in done)
    samples = {
        "ttft": [r.ttft for r in done],
        "tpot": [(r.latency - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1],
        "itl": [gap for r in done for gap in r.itl],
        "e2el": [r.latency for r in done],
    }
    document: dict[str, Any] = {
        "backend": "llmprof-builtin",
        "duration": duration,
        "completed": len(done),
        "failed": len(results) - len(done),
        "total_input_tokens": inputs,
        "total_output_tokens": outputs,
        "request_throughput": len(done) / duration,
        "output_throughput": outputs / duration,
        "total_token_throughput": (inputs + outputs) / duration,
        "errors": [r.error for r in results],
    }
    for metric in METRICS:
        document.update(_spread(samples[metric], metric))
    return document


def profile_request(base_url: str, action: str) -> None:
    """POST /start_profile or /stop_profile: the server opens or closes the capture range."""
    try:
        with _post(f"{base_url}/{action}", {}):
            pass
    except (OSError, ValueError) as exc:
        raise LoadError(
            f'{base_url}/{action}: {exc}; the server must run with --profiler-config \'{{"profiler": "cuda"}}\''
        ) from exc


@dataclass(frozen=True)
class Load:
    """What ``llmprof loadgen`` sends."""

    num_prompts: int
    input_len: int
    output_len: int
    vocab_size: int
    request_rate: float | None
    max_concurrency: int | None
    seed: int


def generate_load(base_url: str, model: str, load: Load, *, profile: bool) -> dict[str, Any]:
    """Run the load (inside the capture range when ``profile``) and return its result document."""
    prompts = synthetic_prompts(load.num_prompts, load.input_len, load.vocab_size, load.seed)
    arrivals = arrival_times(load.num_prompts, load.request_rate, load.seed)
    if profile:
        profile_request(base_url, "start_profile")
    try:
        results, duration = run_load(base_url, model, prompts, load.output_len, arrivals, load.max_concurrency)
    finally:
        if profile:
            profile_request(base_url, "stop_profile")
    document = result_document(results, duration)
    document.update(
        num_prompts=load.num_prompts,
        request_rate=load.request_rate if load.request_rate is not None else "inf",
        max_concurrency=load.max_concurrency,
        model_id=model,
    )
    return document
