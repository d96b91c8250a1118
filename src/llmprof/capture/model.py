"""Model stage: a pinned model into a folder vLLM can load, recorded in ``model.json``.

Three sources:

- ``synthetic``: a random-weight checkpoint built from an architecture file
  (``resources/architectures/*.json``), a dtype and a seed. Every byte is a pure
  function of those three, so kernels can be profiled with no download and no
  gated weights. Weights are drawn per tensor from a generator seeded by
  (seed, tensor name) and written as one safetensors file, one tensor at a time.
  It carries a word-level tokenizer (``tokenizer.json``: token ``i`` is the word
  ``w<i>``, plus unknown, begin and end tokens), so that text clients such as
  ``vllm bench serve`` can send prompts of an exact length: any sequence of
  token ids decodes to words that encode back to the same ids.
- ``huggingface``: a repository at a pinned commit, restricted to the files vLLM
  needs; offline mode (``HF_HUB_OFFLINE=1``) is honoured.
- ``local``: a folder already on disk, used in place.

``model.json`` records the source, and the size and sha256 of every file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmprof.common.config import read_mapping
from llmprof.common.errors import ConfigError, InputError
from llmprof.common.outputs import staged_directory, write_json
from llmprof.common.records import FileRecord

#: Weight dtypes a synthetic checkpoint can be written in (safetensors names).
DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
INIT_STD = 0.02
CHUNK_ELEMENTS = 1 << 22
#: Files of a Hugging Face repository that vLLM needs to load a model.
HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    init: str  # "uniform" (std INIT_STD) or "ones"


def tensor_specs(config: dict[str, Any]) -> list[TensorSpec]:
    """The tensors of a decoder-only checkpoint in Hugging Face naming (Llama and Qwen2 layouts)."""
    model_type = config.get("model_type")
    if model_type not in ("llama", "qwen2", "mistral"):
        raise ConfigError(f"model_type {model_type!r}: synthetic checkpoints support llama, mistral and qwen2")
    try:
        hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
        layers, vocab = int(config["num_hidden_layers"]), int(config["vocab_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads", heads))
        head_dim = int(config.get("head_dim", hidden // heads))
    except KeyError as exc:
        raise ConfigError(f"architecture config lacks {exc.args[0]!r}") from exc
    specs = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), "uniform")]
    for i in range(layers):
        p = f"model.layers.{i}"
        specs += [
            TensorSpec(f"{p}.input_layernorm.weight", (hidden,), "ones"),
            TensorSpec(f"{p}.self_attn.q_proj.weight", (heads * head_dim, hidden), "uniform"),
            TensorSpec(f"{p}.self_attn.k_proj.weight", (kv_heads * head_dim, hidden), "uniform"),
            TensorSpec(f"{p}.self_attn.v_proj.weight", (kv_heads * head_dim, hidden), "uniform"),
            TensorSpec(f"{p}.self_attn.o_proj.weight", (hidden, heads * head_dim), "uniform"),
            TensorSpec(f"{p}.post_attention_layernorm.weight", (hidden,), "ones"),
            TensorSpec(f"{p}.mlp.gate_proj.weight", (inter, hidden), "uniform"),
            TensorSpec(f"{p}.mlp.up_proj.weight", (inter, hidden), "uniform"),
            TensorSpec(f"{p}.mlp.down_proj.weight", (hidden, inter), "uniform"),
        ]
        if model_type == "qwen2":
            specs += [
                TensorSpec(f"{p}.self_attn.q_proj.bias", (heads * head_dim,), "uniform"),
                TensorSpec(f"{p}.self_attn.k_proj.bias", (kv_heads * head_dim,), "uniform"),
                TensorSpec(f"{p}.self_attn.v_proj.bias", (kv_heads * head_dim,), "uniform"),
            ]
    specs.append(TensorSpec("model.norm.weight", (hidden,), "ones"))
    if not config.get("tie_word_embeddings", False):
        specs.append(TensorSpec("lm_head.weight", (vocab, hidden), "uniform"))
    return sorted(specs, key=lambda s: s.name)


def _to_dtype(values: np.ndarray, dtype: str) -> bytes:
    """float32 values as little-endian bytes of ``dtype`` (bfloat16 rounded to nearest even)."""
    if dtype == "bfloat16":
        bits = values.astype("<f4").view("<u4")
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bytes(rounded.astype("<u2").tobytes())
    return values.astype("<f2" if dtype == "float16" else "<f4").tobytes()


def _tensor_chunks(spec: TensorSpec, dtype: str, seed: int) -> Iterator[bytes]:
    """The tensor's bytes in chunks; the generator is seeded by (seed, tensor name)."""
    count = int(np.prod(spec.shape))
    if spec.init == "ones":
        yield _to_dtype(np.ones(count, dtype="<f4"), dtype)
        return
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(spec.name.encode())])))
    bound = np.float32(INIT_STD * np.sqrt(3.0))  # uniform with standard deviation INIT_STD
    for start in range(0, count, CHUNK_ELEMENTS):
        n = min(CHUNK_ELEMENTS, count - start)
        yield _to_dtype((rng.random(n, dtype=np.float32) * 2 - 1) * bound, dtype)


def write_synthetic_safetensors(path: Path, specs: list[TensorSpec], dtype: str, seed: int) -> int:
    """Write a safetensors file tensor by tensor (memory: one chunk). Returns the parameter count."""
    width = {"bfloat16": 2, "float16": 2, "float32": 4}[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        size = int(np.prod(spec.shape)) * width
        header[spec.name] = {"dtype": DTYPES[dtype], "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for spec in specs:
            for chunk in _tensor_chunks(spec, dtype, seed):
                handle.write(chunk)
    return sum(int(np.prod(s.shape)) for s in specs)


def file_record(path: Path, root: Path) -> FileRecord:
    """Relative path, size and sha256 of one file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return {"path": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _files(root: Path) -> list[FileRecord]:
    return [file_record(p, root) for p in sorted(root.rglob("*")) if p.is_file() and p.name != "model.json"]


def load_architecture(path: str | Path) -> dict[str, Any]:
    """An architecture file: {"description": ..., "config": {Hugging Face config.json keys}}."""
    data = read_mapping(path, "architecture", json_format=True)
    if not isinstance(data.get("config"), dict):
        raise ConfigError(f"{path}: expected an object with a 'config' object (Hugging Face config.json keys)")
    config: dict[str, Any] = data["config"]
    return config


def _special_tokens(config: dict[str, Any]) -> dict[int, str]:
    """Id → text of the special tokens: unknown at 0, and the begin and end ids of the architecture."""
    specials = {0: "<unk>"}
    bos, eos = config.get("bos_token_id"), config.get("eos_token_id")
    if isinstance(bos, int):
        specials[bos] = "<s>" if bos != eos else "<|endoftext|>"
    if isinstance(eos, int):
        specials[eos] = "</s>" if bos != eos else "<|endoftext|>"
    return specials


def word_level_tokenizer(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tokenizer.json`` and ``tokenizer_config.json`` of a word-level tokenizer over the whole vocabulary.

    Words split on whitespace and decode joined by spaces, so decoding ids and encoding the text gives the
    same ids back; no begin token is added on encoding.
    """
    specials = _special_tokens(config)
    vocab = {specials.get(i, f"w{i}"): i for i in range(int(config["vocab_size"]))}
    added = [
        {
            "id": i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, text in sorted(specials.items())
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(config.get("max_position_embeddings", 2048)),
        "clean_up_tokenization_spaces": False,
        "unk_token": "<unk>",
        **{
            name: specials[config[key]]
            for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"))
            if isinstance(config.get(key), int)
        },
    }
    return tokenizer, settings


def _synthetic(spec: dict[str, Any], stage: Path) -> dict[str, Any]:
    architecture = Path(spec["architecture"])
    config = load_architecture(architecture)
    dtype = spec.get("dtype", "bfloat16")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    seed = int(spec.get("seed", 0))
    specs = tensor_specs(config)
    write_json(stage / "config.json", {**config, "torch_dtype": dtype})
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
    write_json(stage / "generation_config.json", generation)
    tokenizer, tokenizer_settings = word_level_tokenizer(config)
    (stage / "tokenizer.json").write_text(json.dumps(tokenizer, separators=(",", ":")) + "\n")
    write_json(stage / "tokenizer_config.json", tokenizer_settings)
    parameters = write_synthetic_safetensors(stage / "model.safetensors", specs, dtype, seed)
    return {
        "architecture": {"file": architecture.name, "sha256": file_record(architecture, architecture.parent)["sha256"]},
        "dtype": dtype,
        "seed": seed,
        "parameters": parameters,
        "path": ".",
    }


def _huggingface(spec: dict[str, Any], stage: Path) -> dict[str, Any]:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("source huggingface needs the huggingface_hub package (pip install llmprof[gpu])") from exc
    repo, revision = spec["repo"], spec["revision"]
    try:
        snapshot_download(
            repo_id=repo, revision=revision, allow_patterns=spec.get("files", HF_PATTERNS), local_dir=stage
        )
    except LocalEntryNotFoundError as exc:
        raise InputError(
            f"{repo}@{revision}: not in the local Hugging Face cache and offline mode is on; "
            "download it once with network access or use source: local"
        ) from exc
    except Exception as exc:  # the hub raises many kinds; each names the repository problem
        raise InputError(f"{repo}@{revision}: download failed ({type(exc).__name__}: {exc})") from exc
    for leftover in stage.glob(".cache"):  # huggingface_hub's download bookkeeping
        shutil.rmtree(leftover)
    return {"repo": repo, "revision": revision, "path": "."}


def _local(spec: dict[str, Any], stage: Path) -> dict[str, Any]:
    path = Path(spec["path"])
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json; a local model is a folder vLLM can load")
    return {"path": str(path.resolve()), "files": _files(path.resolve())}


def fetch_model(name: str, spec: dict[str, Any], out: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Materialise one model of the config into ``out`` and write ``out/model.json``.

    Args:
        name: the model's name in the config.
        spec: its config entry (source plus the source's keys), paths already resolved.
        out: the model folder; it appears only when complete.
        force: replace ``out`` if it exists.
    """
    source = spec.get("source")
    builders = {"synthetic": _synthetic, "huggingface": _huggingface, "local": _local}
    if source not in builders:
        raise ConfigError(f"model {name}: source {source!r}: choose from {', '.join(builders)}")
    with staged_directory(Path(out), force, "model") as stage:
        record = {"name": name, "source": source, **builders[source](spec, stage)}
        record.setdefault("files", _files(stage))
        write_json(stage / "model.json", record)
    return record


def model_path(model_dir: str | Path) -> Path:
    """The folder vLLM loads for a fetched model (the model folder, or a local model's own folder)."""
    model_dir = Path(model_dir)
    try:
        record = json.loads((model_dir / "model.json").read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{model_dir}: no model.json; run `llmprof model` first") from exc
    return (model_dir / str(record["path"])).resolve()
