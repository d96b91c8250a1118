"""One process of the nsys overhead ladder: build the vLLM engine once, then time generate calls at several batch sizes.

Runs alone (untraced) or under ``nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop``; the
capture range (when ``--range on``) covers the timed generate calls of every batch size and nothing else:

    engine start -> [wait while --hold-file exists] -> warmup (untimed): W generate calls per batch size
    -> open range -> for each batch size: marker, NVTX "bs B" > "generate" > "iteration k" (k < N_B), timed
    -> end marker -> close range -> JSON

- ``--mode in_process``: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``; the range is ``torch.cuda.profiler.start()/stop()``.
- ``--mode hook``: vLLM's default multiprocess engine; the range is ``llm.start_profile()/stop_profile()`` with
  ``LLM(profiler_config={"profiler": "cuda"})`` (passed only when ``--range on``).
- Markers (in_process only): between batch sizes, after a device synchronize, one pageable host-to-device copy of
  ``MARKER_BASE + B`` bytes (``MARKER_END`` after the last).  With ``--trace=cuda`` the copies split the report's
  kernels per batch size without NVTX.  They sit outside the timed calls.

The latency of an iteration is the wall time of one ``llm.generate`` call (B prompts of --input-len token ids,
--output-len new tokens each, greedy, ignore_eos), the same as llmprof's workload (src/llmprof/capture/workload.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

MARKER_BASE = 1_234_000  # bytes of the marker copy before batch size B: MARKER_BASE + B
MARKER_END = 1_234_999
WORKLOAD_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/tmp/model")
    p.add_argument("--mode", choices=["in_process", "hook"], required=True)
    p.add_argument("--range", choices=["on", "off"], default="on", help="call the profiler start/stop")
    p.add_argument("--bs", default="1,16,64", help="batch sizes, in order")
    p.add_argument("--iters", default="8,20,8", help="timed generate calls per batch size")
    p.add_argument("--warmup", type=int, default=2, help="untimed generate calls per batch size")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markers", choices=["auto", "on", "off"], default="auto", help="auto: in_process only")
    p.add_argument("--hold-file", default=None, help="after engine start, wait while this file exists (max 300 s)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.bs_list = [int(b) for b in args.bs.split(",")]
    args.iters_list = [int(n) for n in args.iters.split(",")]
    if len(args.iters_list) == 1:
        args.iters_list *= len(args.bs_list)
    if len(args.iters_list) != len(args.bs_list):
        p.error("--iters needs one value or one per batch size")
    return args


def synthetic_prompts(batch_size: int, input_len: int, vocab_size: int, seed: int) -> list[list[int]]:
    """Seeded random token ids, avoiding the first 16 ids (as llmprof.capture.workload.synthetic_prompts)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(min(16, vocab_size - 1), vocab_size, size=(batch_size, input_len)).tolist()


def wait_hold(path: str | None, limit_s: float = 300.0) -> float:
    """Wait while the hold file exists and the process whose id it holds (the driver's export job) lives."""
    t0 = time.perf_counter()
    while path and os.path.exists(path) and time.perf_counter() - t0 < limit_s:
        try:
            os.kill(int(Path(path).read_text().strip()), 0)
        except (OSError, ValueError):
            break
        time.sleep(0.2)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(WORKLOAD_ENV)
    if args.mode == "in_process":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # must precede the vLLM import
    t_import = time.perf_counter()
    import nvtx
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import_s = time.perf_counter() - t_import
    use_markers = args.markers == "on" or (args.markers == "auto" and args.mode == "in_process")
    range_on = args.range == "on"
    kwargs = dict(
        model=args.model,
        skip_tokenizer_init=True,
        dtype="bfloat16",
        gpu_memory_utilization=0.5,
        max_model_len=1024,
        seed=0,
    )
    if args.mode == "hook" and range_on:
        kwargs["profiler_config"] = {"profiler": "cuda"}
    vocab = int(json.loads((Path(args.model) / "config.json").read_text())["vocab_size"])
    t0 = time.perf_counter()
    with nvtx.annotate("model_load"):
        llm = LLM(**kwargs)
    engine_start_s = time.perf_counter() - t0
    hold_wait_s = wait_hold(args.hold_file)

    sampling = SamplingParams(max_tokens=args.output_len, ignore_eos=True, temperature=0.0, detokenize=False)
    prompts = {
        b: [TokensPrompt(prompt_token_ids=p) for p in synthetic_prompts(b, args.input_len, vocab, args.seed)]
        for b in args.bs_list
    }

    def generate(b: int) -> tuple[float, int]:
        t = time.perf_counter()
        outs = llm.generate(prompts[b], sampling, use_tqdm=False)
        return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)

    def marker(nbytes: int) -> None:
        if use_markers:
            torch.cuda.synchronize()
            torch.empty(nbytes, dtype=torch.uint8).to("cuda")
            torch.cuda.synchronize()

    warmup: dict[str, list[float]] = {}
    with nvtx.annotate("warmup"):
        for b in args.bs_list:
            warmup[str(b)] = [generate(b)[0] for _ in range(args.warmup)]

    if range_on:
        llm.start_profile() if args.mode == "hook" else torch.cuda.profiler.start()
    t_range = time.perf_counter()
    results: dict[str, dict] = {}
    for b, n in zip(args.bs_list, args.iters_list):
        marker(MARKER_BASE + b)
        lat, tok = [], []
        with nvtx.annotate(f"bs {b}"):
            with nvtx.annotate("generate"):
                for i in range(n):
                    with nvtx.annotate(f"iteration {i}"):
                        dt, tokens = generate(b)
                    lat.append(dt)
                    tok.append(tokens)
        results[str(b)] = {"latency_s": lat, "output_tokens": tok, "expected_tokens": b * args.output_len}
    marker(MARKER_END)
    range_s = time.perf_counter() - t_range
    if range_on:
        llm.stop_profile() if args.mode == "hook" else torch.cuda.profiler.stop()

    record = {
        "mode": args.mode,
        "range": args.range,
        "markers": use_markers,
        "bs": args.bs_list,
        "iters": args.iters_list,
        "warmup_per_bs": args.warmup,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "import_s": import_s,
        "engine_start_s": engine_start_s,
        "hold_wait_s": hold_wait_s,
        "range_s": range_s,
        "warmup_latency_s": warmup,
        "results": results,
        "driver_cuda_initialized": bool(torch.cuda.is_initialized()),
        "versions": {
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "nvtx": getattr(nvtx, "__version__", None),
        },
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": {
            k: os.environ.get(k)
            for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_WORKER_MULTIPROC_METHOD")
        },
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    medians = {b: sorted(r["latency_s"])[len(r["latency_s"]) // 2] for b, r in results.items()}
    print("LADDER_RESULT", json.dumps(medians))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
