"""Workflow configuration: loaded from YAML and validated against the one schema Snakemake uses too."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_RESOURCE = "config.schema.yaml"


def schema() -> dict[str, Any]:
    """The configuration JSON schema (config/schema.yaml in the source tree)."""
    text = resources.files("llmprof").joinpath("data", SCHEMA_RESOURCE).read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` and return it; the error names the offending key and why."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: {where}: {first.message}")
    return config


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a workflow configuration file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(data, str(path))
