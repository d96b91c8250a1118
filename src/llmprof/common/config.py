"""Workflow configuration: loaded from YAML and validated against the one schema Snakemake uses too."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from llmprof.common.errors import ConfigError
from llmprof.common.records import RunSpec

SCHEMA_RESOURCE = "config.schema.yaml"


def schema() -> dict[str, Any]:
    """The configuration JSON schema (config/schema.yaml in the source tree)."""
    text = resources.files("llmprof").joinpath("data", SCHEMA_RESOURCE).read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


KeyPath = Sequence[str | int]
#: The line (1-based) of a key in the config's file, where known.
Locator = Callable[[KeyPath], int | None]


def validate(config: dict[str, Any], source: str = "config", locate: Locator | None = None) -> dict[str, Any]:
    """Validate ``config`` and return it.

    The error is one line naming the file (``source``), the line of the offending key where
    ``locate`` knows it, the key and why.
    """
    problem = _first_problem(config)
    if problem is not None:
        path, message = problem
        line = locate(path) if locate is not None and path else None
        where = "/".join(str(p) for p in path) or "(top level)"
        raise ConfigError(f"{source}{f':{line}' if line else ''}: {where}: {message}")
    return config


def _first_problem(config: dict[str, Any]) -> tuple[list[str | int], str] | None:
    """The first problem of a config (in key order): where it is and what is wrong."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        path: list[str | int] = list(first.absolute_path)
        if first.validator == "additionalProperties" and isinstance(first.instance, dict):
            known = first.schema.get("properties", {})
            path += sorted(str(k) for k in first.instance if k not in known)[:1]  # point at the unknown key
        return path, first.message
    if not config.get("runs") and not config.get("sweeps"):
        return ["runs"], "no runs: give at least one under runs or sweeps"
    models = config.get("models", {})
    for run, spec in config.get("runs", {}).items():
        if "model" in spec and spec["model"] not in models:
            known_models = ", ".join(models) or "none"
            return ["runs", run, "model"], f"{spec['model']!r} is not one of the models ({known_models})"
    for category, pattern in (config.get("categories") or {}).items():
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            return ["categories", category], f"invalid regular expression {pattern!r} ({exc})"
    return None


def yaml_locator(text: str) -> Locator:
    """Where each key of a YAML document is: the line of its deepest key that the document holds."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        root = None

    def locate(path: KeyPath) -> int | None:
        node, line = root, None
        for key in path:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                found = (node.value[key], node.value[key])
            else:
                found = None
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        return line

    return locate


def validate_file_config(config: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Validate a config read from ``path`` (by Snakemake, say), naming the file and line of a problem."""
    try:
        locate = yaml_locator(Path(path).read_text())
    except OSError:
        locate = None
    return validate(config, str(path), locate)


#: Short labels of swept keys in expanded run names (llama1b-batch-bs16-in512).
SWEEP_LABELS = {
    "capture_mode": "",
    "engine.dtype": "",
    "engine.tensor_parallel_size": "tp",
    "engine.gpu_memory_utilization": "gmu",
    "engine.max_model_len": "len",
    "engine.enforce_eager": "eager",
    "engine.seed": "seed",
    "workload.batch_size": "bs",
    "workload.input_len": "in",
    "workload.output_len": "out",
    "workload.warmup_iters": "warmup",
    "workload.profile_iters": "iters",
    "workload.prompts": "prompts",
    "workload.seed": "pseed",
}


def _value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).replace("/", "_").replace(" ", "_")
    return Path(text).stem if "." in text and not text.replace(".", "").isdigit() else text


def sweep_run_name(sweep: str, values: dict[str, Any]) -> str:
    """A readable, stable run name: the sweep's name, then each swept key's label and value, in key order."""
    return "-".join([sweep, *(f"{SWEEP_LABELS[k]}{_value_label(v)}" for k, v in sorted(values.items()))])


def expand_sweeps(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """The config with every sweep expanded into runs (the product of its value lists), validated.

    Raises:
        ConfigError: an expanded run is invalid, or its name collides with another run.
    """
    runs = dict(config.get("runs", {}))
    for sweep, spec in config.get("sweeps", {}).items():
        keys = sorted(spec["over"])
        for combination in itertools.product(*(spec["over"][k] for k in keys)):
            values = dict(zip(keys, combination))
            run = json_copy(spec["base"])
            for key, value in values.items():
                section, _, leaf = key.rpartition(".")
                (run.setdefault(section, {}) if section else run)[leaf or key] = value
            run["sweep"] = {"name": sweep, "values": values}
            name = sweep_run_name(sweep, values)
            if name in runs:
                raise ConfigError(f"{source}: sweeps/{sweep}: expanded run {name!r} collides with another run")
            runs[name] = run
    expanded = {**config, "runs": runs}
    return validate(expanded, source)


def config_digest(config: Mapping[str, object]) -> str:
    """sha256 of a config (or config entry) in canonical JSON: equal digests, equal settings."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_defaults(instance: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``instance`` with every schema default filled in, recursively through properties."""
    filled = dict(instance)
    for key, child in node.get("properties", {}).items():
        if key not in filled and "default" in child:
            filled[key] = json_copy(child["default"])
        if isinstance(filled.get(key), dict) and child.get("type") == "object":
            filled[key] = with_defaults(filled[key], child)
    return filled


def json_copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def run_spec(run: str, spec: dict[str, Any]) -> RunSpec:
    """A profiled run's settings with every default filled: what the workload and profile stages read."""
    if "model" not in spec:
        raise ConfigError(f"run {run}: analyses an existing capture; it has no model to profile")
    node = schema()["properties"]["runs"]["additionalProperties"]
    validator = jsonschema.Draft202012Validator(node)
    error = next(iter(sorted(validator.iter_errors(spec), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(run)"
        raise ConfigError(f"run {run}: {where}: {error.message}")
    return cast(RunSpec, {"run": run, **with_defaults(spec, node)})


def container_image(config: Mapping[str, Any]) -> str:
    """The image the workflow's jobs run in (``container:`` of the Snakefile): ``docker://IMAGE:TAG``, or
    ``docker://IMAGE@sha256:…`` when the config pins a digest. Unset keys take the schema's defaults."""
    settings = with_defaults(dict(config.get("container") or {}), schema()["properties"]["container"])
    if "digest" in settings:
        return f"docker://{settings['image']}@{settings['digest']}"
    return f"docker://{settings['image']}:{settings['tag']}"


def read_mapping(path: str | Path, kind: str, *, json_format: bool = False) -> dict[str, Any]:
    """A YAML (or JSON) file holding a mapping; ConfigError naming the file and what is wrong otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if json_format else yaml.safe_load(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {kind} file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a workflow configuration file."""
    return validate_file_config(read_mapping(path, "configuration"), path)
