"""Documentation that cannot drift: every command and config key is documented and has help."""

from __future__ import annotations

from conftest import ROOT

from llmprof.cli import main
from llmprof.common.config import schema


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        assert command.help, name
        assert f"llmprof {name}" in readme, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.name}"  # type: ignore[attr-defined]


def _keys(node: dict, prefix: str = "") -> list[str]:  # type: ignore[type-arg]
    keys = []
    for key, child in node.get("properties", {}).items():
        keys.append(prefix + key)
        keys += _keys(child, prefix + key + ".")
        if isinstance(child.get("additionalProperties"), dict):
            placeholder = {"runs": "{run}", "models": "{model}"}.get(key, "{name}")
            keys += _keys(child["additionalProperties"], f"{prefix}{key}.{placeholder}.")
    return keys


def test_every_config_key_is_described_in_schema_and_readme() -> None:
    doc = (ROOT / "config" / "README.md").read_text()
    tree = schema()
    for key in _keys(tree):
        assert f"`{key}`" in doc, key
    for section in ("runs", "models"):
        for key, spec in tree["properties"][section]["additionalProperties"]["properties"].items():
            assert spec.get("description"), f"{section}: {key}"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "python -m pytest" in (ROOT / "README.md").read_text()
