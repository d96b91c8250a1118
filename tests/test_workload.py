"""The workload's order of events and its run record, with stand-ins for vLLM, torch and nvtx (no GPU here).

The GPU tests run the real workload; these check, where no GPU is, that warmup
stays outside the capture, that the capture is opened the way the capture mode
needs, and what the record holds.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmprof.capture.workload import WORKLOAD_ENV, run_workload
from llmprof.common.config import run_spec

OUTPUT_LEN = 4


class Events(list[str]):
    """What the stand-ins saw, in order."""


def _modules(events: Events) -> dict[str, types.ModuleType]:
    """Stand-in ``nvtx``, ``torch``, ``vllm`` and ``vllm.inputs`` modules that log their calls to ``events``."""

    @contextmanager
    def annotate(name: str) -> Iterator[None]:
        events.append(f"push {name}")
        yield
        events.append(f"pop {name}")

    class LLM:
        def __init__(self, **arguments: Any) -> None:
            events.append(f"engine {json.dumps(arguments, sort_keys=True)}")

        def generate(self, prompts: list[Any], sampling: Any, use_tqdm: bool) -> list[Any]:
            events.append(f"generate {len(prompts)}")
            output = types.SimpleNamespace(token_ids=[0] * sampling.max_tokens)
            return [types.SimpleNamespace(outputs=[output]) for _ in prompts]

        def start_profile(self) -> None:
            events.append("vllm start_profile")

        def stop_profile(self) -> None:
            events.append("vllm stop_profile")

    profiler = types.SimpleNamespace(
        start=lambda: events.append("cudaProfilerStart"), stop=lambda: events.append("cudaProfilerStop")
    )
    cuda = types.SimpleNamespace(profiler=profiler, get_device_name=lambda index: "Test GPU", device_count=lambda: 2)
    modules = {
        "nvtx": types.ModuleType("nvtx"),
        "torch": types.ModuleType("torch"),
        "vllm": types.ModuleType("vllm"),
        "vllm.inputs": types.ModuleType("vllm.inputs"),
    }
    modules["nvtx"].annotate = annotate  # type: ignore[attr-defined]
    modules["torch"].__dict__.update(cuda=cuda, version=types.SimpleNamespace(cuda="12.9"), __version__="2.0")
    modules["vllm"].__dict__.update(LLM=LLM, SamplingParams=types.SimpleNamespace, __version__="0.1")
    modules["vllm.inputs"].TokensPrompt = dict  # type: ignore[attr-defined]
    return modules


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """The stand-ins installed for one test; the environment the workload sets is restored after it."""
    seen = Events()
    for name, module in _modules(seen).items():
        monkeypatch.setitem(sys.modules, name, module)
    for key in (*WORKLOAD_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.setenv(key, "unset")
    return seen


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"vocab_size": 64}))
    (folder / "model.json").write_text(json.dumps({"name": "tiny", "source": "synthetic", "path": ".", "files": []}))
    return folder


def _spec(mode: str, **workload: object) -> Any:
    settings = {"batch_size": 3, "output_len": OUTPUT_LEN, "warmup_iters": 2, "profile_iters": 2, **workload}
    return run_spec("r", {"model": "tiny", "capture_mode": mode, "workload": settings})


def _calls(events: Events) -> list[str]:
    return [e for e in events if not e.startswith("engine ")]


def test_vllm_hook_opens_the_capture_in_the_engine_after_warmup(
    events: Events, model_dir: Path, tmp_path: Path
) -> None:
    record = run_workload(_spec("vllm_hook"), model_dir, tmp_path / "run.json", profile=True)
    assert _calls(events) == [
        "push model_load",
        "pop model_load",
        "push warmup",
        "generate 3",
        "generate 3",
        "pop warmup",
        "vllm start_profile",
        "push generate",
        "push iteration 0",
        "generate 3",
        "pop iteration 0",
        "push iteration 1",
        "generate 3",
        "pop iteration 1",
        "pop generate",
        "vllm stop_profile",
    ]
    engine = json.loads(next(e for e in events if e.startswith("engine "))[len("engine ") :])
    assert engine["profiler_config"] == {"profiler": "cuda"} and engine["skip_tokenizer_init"] is True
    assert engine["model"] == str(model_dir.resolve()) and engine["max_model_len"] == 2048
    assert json.loads((tmp_path / "run.json").read_text()) == record
    assert [i["output_tokens"] for i in record["iterations"]] == [3 * OUTPUT_LEN, 3 * OUTPUT_LEN]
    assert record["output_tokens"] == 2 * 3 * OUTPUT_LEN and len(record["warmup_latency_s"]) == 2
    assert record["model"]["name"] == "tiny" and record["spec"]["workload"]["batch_size"] == 3
    assert record["gpu"] == {"name": "Test GPU", "count": 2} and record["versions"]["vllm"] == "0.1"
    assert record["profiled"] is True and "nsys" not in record


def test_in_process_opens_the_capture_from_the_driver(events: Events, model_dir: Path, tmp_path: Path) -> None:
    import os

    run_workload(_spec("in_process"), model_dir, tmp_path / "run.json", profile=True)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    calls = _calls(events)
    assert calls.index("cudaProfilerStart") == calls.index("pop warmup") + 1
    assert calls.index("cudaProfilerStop") == len(calls) - 1
    assert "profiler_config" not in next(e for e in events if e.startswith("engine "))


def test_baseline_opens_no_capture_and_text_prompts_keep_the_tokenizer(
    events: Events, model_dir: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in ({"prompt": "hi"}, {"prompt_token_ids": [5, 6]})) + "\n")
    record = run_workload(
        _spec("vllm_hook", batch_size=2, prompts=str(prompts)), model_dir, tmp_path / "b.json", profile=False
    )
    assert not any("rofile" in e for e in _calls(events))
    engine = json.loads(next(e for e in events if e.startswith("engine "))[len("engine ") :])
    assert engine["skip_tokenizer_init"] is False and "profiler_config" not in engine
    assert record["profiled"] is False and record["iterations"][0]["output_tokens"] == 2 * OUTPUT_LEN
