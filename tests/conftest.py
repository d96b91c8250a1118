"""Shared fixtures: the real exports under tests/data and resources/samples, each extracted once."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmprof.analysis.extract import extract

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = ROOT / "resources" / "samples"
#: The in-process vLLM capture: the fixture most tests pin numbers on (40,755 kernels).
DEMO = DATA / "vllm_inproc_h100_3iter" / "vllm.sqlite"


@dataclass(frozen=True)
class Capture:
    """One real export with its nsys stats golden files."""

    id: str
    sqlite: Path

    @property
    def oracle_dir(self) -> Path:
        return self.sqlite.parent / "nsys-stats"

    def oracle(self, report: str) -> Path:
        return self.oracle_dir / f"{self.sqlite.stem}_{report}.csv"


def all_captures() -> list[Capture]:
    tests = [Capture(f"{p.parent.name}/{p.stem}", p) for p in sorted(DATA.glob("*/*.sqlite"))]
    samples = [Capture(f"samples/{p.parent.name}", p) for p in sorted(SAMPLES.glob("*/*.sqlite"))]
    return tests + samples


CAPTURES = all_captures()


def by_id(capture_id: str) -> Capture:
    return next(c for c in CAPTURES if c.id == capture_id)


@pytest.fixture(scope="session")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every capture extracted once per session: capture id → extract folder."""
    base = tmp_path_factory.mktemp("extract")
    out = {}
    for capture in CAPTURES:
        folder = base / capture.id.replace("/", "__")
        extract(capture.sqlite, folder)
        out[capture.id] = folder
    return out


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (llmprof, snakemake) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
