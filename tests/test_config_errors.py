"""Config errors are one line naming the file, the line of the key, the key and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmprof.common.config import load
from llmprof.common.errors import ConfigError

CASES = [
    ("runs:\n  a:\n    capture: x.sqlite\n    batch: 3\n", ":4: runs/a/batch: Additional properties"),
    ("runs:\n  a:\n    capture: [x.sqlite\n", ":4: not valid YAML"),
    ("runs:\n  a:\n    capture: x.sqlite\ncategories:\n  gemm: 'gemm(['\n", ":5: categories/gemm: invalid regular"),
    ("models: {}\nruns:\n  a:\n    model: m\n", ":4: runs/a/model: 'm' is not one of the models"),
    ("runs:\n  a:\n    capture: x.csv\n", ":3: runs/a/capture: 'x.csv' does not match"),
    (
        "runs:\n  a:\n    capture: x.sqlite\n    workload: {batch_size: 0}\n",
        ":4: runs/a/workload/batch_size: 0 is less than",
    ),
    ("runs: {}\n", ":1: runs: no runs"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1].split(": ")[1] for c in CASES])
def test_config_error_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{expected}"), message
    assert "\n" not in message and len(message) < 300
