"""Model stage: synthetic checkpoints are a pure function of (architecture, dtype, seed) and load as safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT
from safetensors import safe_open

from llmprof.capture.model import fetch_model, load_architecture, model_path, tensor_specs
from llmprof.cli import main
from llmprof.common.errors import ConfigError, InputError

TINY = ROOT / "resources" / "architectures" / "tiny-llama.json"


def _synthetic(tmp: Path, name: str, **overrides: object) -> dict[str, object]:
    spec = {"source": "synthetic", "architecture": str(TINY), "dtype": "bfloat16", "seed": 0, **overrides}
    return fetch_model("tiny", spec, tmp / name)


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first, second = _synthetic(tmp_path, "a"), _synthetic(tmp_path, "b")
    other = _synthetic(tmp_path, "c", seed=1)
    assert first["files"] == second["files"]
    assert first["files"] != other["files"]
    assert (tmp_path / "a" / "model.json").read_bytes() == (tmp_path / "b" / "model.json").read_bytes()


def test_synthetic_checkpoint_loads_with_every_tensor(tmp_path: Path) -> None:
    record = _synthetic(tmp_path, "f32", dtype="float32")
    specs = {s.name: s for s in tensor_specs(load_architecture(TINY))}
    with safe_open(str(tmp_path / "f32" / "model.safetensors"), "numpy") as checkpoint:
        assert set(checkpoint.keys()) == set(specs)
        for name, spec in specs.items():
            values = checkpoint.get_tensor(name)
            assert values.shape == spec.shape, name
            if spec.init == "ones":
                assert np.all(values == 1.0)
            else:
                assert abs(float(values.std()) - 0.02) < 0.005 and np.abs(values).max() <= 0.02 * np.sqrt(3) + 1e-6
    assert record["parameters"] == sum(int(np.prod(s.shape)) for s in specs.values())
    config = json.loads((tmp_path / "f32" / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and config["model_type"] == "llama"


def test_bfloat16_is_float32_rounded(tmp_path: Path) -> None:
    _synthetic(tmp_path, "bf16")
    _synthetic(tmp_path, "f32", dtype="float32")
    raw = (tmp_path / "bf16" / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    name = "model.layers.0.mlp.up_proj.weight"
    start, end = header[name]["data_offsets"]
    bf16 = np.frombuffer(raw[8 + header_len + start : 8 + header_len + end], dtype="<u2").astype("<u4") << 16
    with safe_open(str(tmp_path / "f32" / "model.safetensors"), "numpy") as checkpoint:
        reference = checkpoint.get_tensor(name).ravel()
    assert np.allclose(bf16.view("<f4"), reference, rtol=1 / 128, atol=0)


def test_architectures_shipped_have_the_stated_sizes() -> None:
    sizes = {
        p.stem: sum(int(np.prod(s.shape)) for s in tensor_specs(load_architecture(p)))
        for p in (ROOT / "resources" / "architectures").glob("*.json")
    }
    assert 1.0e9 < sizes["llama-1b"] < 1.1e9
    assert 0.45e9 < sizes["qwen2-0.5b"] < 0.52e9


def test_local_model_is_used_in_place(tmp_path: Path) -> None:
    _synthetic(tmp_path, "weights")
    record = fetch_model("mine", {"source": "local", "path": str(tmp_path / "weights")}, tmp_path / "local")
    assert model_path(tmp_path / "local") == (tmp_path / "weights").resolve()
    assert {f["path"] for f in record["files"]} >= {"config.json", "model.safetensors"}  # type: ignore[union-attr]


def test_bad_model_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such architecture file"):
        fetch_model("x", {"source": "synthetic", "architecture": str(tmp_path / "none.json")}, tmp_path / "x")
    bad = tmp_path / "gpt.json"
    bad.write_text(json.dumps({"config": {"model_type": "gpt2"}}))
    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        fetch_model("x", {"source": "synthetic", "architecture": str(bad)}, tmp_path / "x")
    with pytest.raises(InputError, match="no config.json"):
        fetch_model("x", {"source": "local", "path": str(tmp_path)}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_huggingface_offline_without_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = {
        "source": "huggingface",
        "repo": "meta-llama/Llama-3.2-1B",
        "revision": "4e20de362430cd3b72f300e6b0f18e50e7166e08",
    }
    result = CliRunner().invoke(
        main, ["model", "llama", "--spec", json.dumps(spec), "-o", str(tmp_path / "m"), "--quiet"], env={**os.environ}
    )
    assert result.exit_code == 1
    assert "meta-llama/Llama-3.2-1B@4e20de36" in result.output and "offline" in result.output
    assert not (tmp_path / "m").exists()


def test_synthetic_tokenizer_covers_the_vocabulary(tmp_path: Path) -> None:
    _synthetic(tmp_path, "tok")
    folder = tmp_path / "tok"
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(512))  # tiny-llama's vocab_size: one word per id
    assert vocab["<unk>"] == 0 and vocab["<s>"] == 1 and vocab["</s>"] == 2 and vocab["w511"] == 511
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    assert settings["bos_token"] == "<s>" and settings["eos_token"] == "</s>"
    tokenizers = pytest.importorskip("tokenizers")
    loaded = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = np.random.default_rng(0).integers(3, 512, 64).tolist()
    assert loaded.encode(loaded.decode(ids)).ids == ids  # a client's text prompt has exactly the tokens it chose


def test_one_id_for_begin_and_end_gets_one_token(tmp_path: Path) -> None:
    architecture = json.loads(TINY.read_text())
    architecture["config"].update(bos_token_id=7, eos_token_id=7)
    (tmp_path / "arch.json").write_text(json.dumps(architecture))
    fetch_model("same", {"source": "synthetic", "architecture": str(tmp_path / "arch.json")}, tmp_path / "same")
    vocab = json.loads((tmp_path / "same" / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab["<|endoftext|>"] == 7 and "<s>" not in vocab and len(vocab) == 512
