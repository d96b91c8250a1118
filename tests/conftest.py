"""Shared fixtures: the real exports under tests/data and resources/samples, each extracted once, and the demo
workflow run once."""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmprof.analysis.extract import extract

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = ROOT / "resources" / "samples"
#: The in-process vLLM capture: the fixture most tests pin numbers on (40,755 kernels).
DEMO = DATA / "vllm_inproc_h100_3iter" / "vllm.sqlite"


#: Where exports kept xz-compressed in tests/data are unpacked, once per content, outside the working tree: a
#: folder of this user's own (another user's files there are never read).
UNPACKED = Path(tempfile.gettempdir()) / f"llmprof-test-data-{os.getuid()}"


def unpacked(packed: Path) -> Path:
    """The export ``NAME.sqlite.xz`` unpacked to ``NAME.sqlite`` in a folder named by its content's digest."""
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()[:16]
    target = UNPACKED / digest / packed.name.removesuffix(".xz")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        with lzma.open(packed) as source, partial.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)
    return target


def data_export(folder: Path, stem: str) -> Path:
    """The export ``stem`` of a tests/data folder: ``stem.sqlite``, or ``stem.sqlite.xz`` unpacked."""
    plain = folder / f"{stem}.sqlite"
    return plain if plain.exists() else unpacked(folder / f"{stem}.sqlite.xz")


@dataclass(frozen=True)
class Capture:
    """One real export with its nsys stats golden files (in ``home``, the folder it is kept in)."""

    id: str
    sqlite: Path
    home: Path

    @property
    def oracle_dir(self) -> Path:
        return self.home / "nsys-stats"

    def oracle(self, report: str) -> Path:
        return self.oracle_dir / f"{self.sqlite.stem}_{report}.csv"


def all_captures() -> list[Capture]:
    kept = sorted([*DATA.glob("*/*.sqlite"), *DATA.glob("*/*.sqlite.xz")])
    stems = [(p.parent, p.name.removesuffix(".xz").removesuffix(".sqlite")) for p in kept]
    tests = [Capture(f"{folder.name}/{stem}", data_export(folder, stem), folder) for folder, stem in stems]
    samples = [Capture(f"samples/{p.parent.name}", p, p.parent) for p in sorted(SAMPLES.glob("*/*.sqlite"))]
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


def snakemake(
    args: list[str], env: dict[str, str], workdir: Path | None = None, project: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Snakemake on ``project``'s Snakefile, in ``workdir`` when given (results, logs and .snakemake go there)."""
    where = [] if workdir is None else ["--directory", str(workdir)]
    return subprocess.run(
        ["snakemake", "-s", str(project / "Snakefile"), *where, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def demo_args(root: Path) -> list[str]:
    """The arguments that run the demo study of the project copy at ``root``."""
    return ["--cores", "1", "--configfile", str(root / "config" / "demo.yaml")]


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Path:
    """The demo workflow run once per session in a copy of the project (archive needs config and results side by
    side); tests read it and must not change it. Its folder's name has a space and a non-ASCII letter, as users' do."""
    root = tmp_path_factory.mktemp("project") / "demo study é"
    for item in ("config", "resources/samples", "workflow"):
        shutil.copytree(ROOT / item, root / item, symlinks=True)
    shutil.copy(ROOT / "Snakefile", root / "Snakefile")
    (root / "config" / "schema.yaml").unlink()
    shutil.copy(ROOT / "src" / "llmprof" / "data" / "config.schema.yaml", root / "config" / "schema.yaml")
    result = snakemake(demo_args(root), cli_env, root, project=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root
