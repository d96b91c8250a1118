"""Studies: sweeps, the comparison table and findings, provenance, archive and verify, failed runs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, snakemake

from llmprof.cli import main
from llmprof.common.config import expand_sweeps, load, sweep_run_name
from llmprof.common.errors import ConfigError
from llmprof.common.layout import STUDY, RunPaths, nsys_report, run_records, sqlite_export
from llmprof.evidence.archive import MANIFEST, pack

MODELS = {"m": {"source": "synthetic", "architecture": "resources/architectures/tiny-llama.json"}}


def test_sweep_expands_the_product_into_named_runs() -> None:
    config = {
        "models": MODELS,
        "sweeps": {
            "tiny": {
                "base": {"model": "m", "workload": {"input_len": 64}},
                "over": {"workload.batch_size": [1, 8], "engine.enforce_eager": [True, False]},
            }
        },
    }
    runs = expand_sweeps(config)["runs"]
    assert sorted(runs) == ["tiny-eageroff-bs1", "tiny-eageroff-bs8", "tiny-eageron-bs1", "tiny-eageron-bs8"]
    run = runs["tiny-eageron-bs8"]
    assert run["workload"] == {"input_len": 64, "batch_size": 8} and run["engine"] == {"enforce_eager": True}
    assert run["sweep"] == {"name": "tiny", "values": {"engine.enforce_eager": True, "workload.batch_size": 8}}
    assert sweep_run_name("s", {"capture_mode": "in_process"}) == "s-in_process"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"base": {"model": "m"}, "over": {"workload.batch_sz": [1]}}, "batch_sz"),
        ({"base": {"model": "m"}, "over": {"workload.batch_size": [0]}}, "minimum"),
        ({"base": {"model": "nope"}, "over": {"workload.batch_size": [1]}}, "nope"),
    ],
)
def test_bad_sweeps_are_rejected(sweep: dict[str, object], message: str) -> None:
    from llmprof.common.config import validate

    with pytest.raises(ConfigError, match=message):
        expand_sweeps(validate({"models": MODELS, "sweeps": {"s": sweep}}))


def test_sweep_dag_names_every_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    config = {
        "models": MODELS,
        "sweeps": {"tiny": {"base": {"model": "m"}, "over": {"workload.batch_size": [1, 4, 16]}}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(["-n", "--configfile", str(path)], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    for run in ("tiny-bs1", "tiny-bs4", "tiny-bs16"):
        assert f"results/{run}/profile/run.json" in result.stdout
    assert "results/study/report.html" in result.stdout


def test_demo_study_compares_the_runs(demo_study: Path) -> None:
    table = pq.read_table(demo_study / "results" / "study" / "runs.parquet").to_pandas()
    assert list(table["run"]) == ["llama1b-bs1", "llama1b-bs16"] and set(table["status"]) == {"ok"}
    assert list(table["batch_size"]) == [1, 16]
    assert table["output_tok_per_s_untraced"].round().tolist() == [418.0, 5843.0]
    findings = {f["id"]: f for f in json.loads((demo_study / "results" / "study" / "findings.json").read_text())}
    assert findings["throughput_scaling"]["title"].startswith("Throughput grows 14.0× from batch size 1 to 16")
    assert "idle_trend" in findings and "overhead_range" in findings
    for name in ("throughput", "latency", "categories", "top_kernels"):
        assert (demo_study / "results" / "study" / "figures" / f"{name}.png").exists()


def test_readme_figure_is_the_demo_study_figure(demo_study: Path) -> None:
    shown = ROOT / "docs" / "study-throughput.png"
    assert shown.read_bytes() == (demo_study / "results" / "study" / "figures" / "throughput.png").read_bytes()
    assert "docs/study-throughput.png" in (ROOT / "README.md").read_text()


def test_provenance_records_every_artifact(demo_study: Path) -> None:
    record = json.loads((demo_study / "results" / "llama1b-bs16" / "provenance.json").read_text())
    assert record["run"]["gpu"]["name"] == "NVIDIA H100 80GB HBM3" and record["run"]["versions"]["vllm"] == "0.24.0"
    paths = {a["path"]: a["sha256"] for a in record["artifacts"]}
    metrics = demo_study / "results" / "llama1b-bs16" / "extract" / "metrics.json"
    assert paths["results/llama1b-bs16/extract/metrics.json"] == hashlib.sha256(metrics.read_bytes()).hexdigest()
    assert any(p.endswith("resources/samples/vllm-llama1b-bs16/profile.sqlite") for p in paths)
    assert len(record["config_digest"]) == 64 and record["packages"]["pyarrow"]


def _archive(demo_study: Path, out: Path) -> Path:
    result = CliRunner().invoke(
        main,
        [
            "archive",
            "--config",
            str(demo_study / "config" / "demo.yaml"),
            "--root",
            str(demo_study),
            "-o",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def _rewrite(archive: Path, out: Path, path: str, update_manifest: bool) -> Path:
    """A copy of the archive with one byte of ``path`` changed (and its checksum, if asked)."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    data = bytearray(members[path])
    data[len(data) // 2] ^= 0x01
    members[path] = bytes(data)
    if update_manifest:
        manifest = json.loads(members[MANIFEST])
        for entry in manifest["files"]:
            if entry["path"] == path:
                entry["sha256"] = hashlib.sha256(members[path]).hexdigest()
        members[MANIFEST] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out.write_bytes(gzip.compress(buffer.getvalue()))
    return out


def test_archive_is_deterministic_and_verifies(demo_study: Path, tmp_path: Path) -> None:
    first, second = _archive(demo_study, tmp_path / "a.tar.gz"), _archive(demo_study, tmp_path / "b.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    result = CliRunner().invoke(main, ["verify", str(first), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "0 problem(s)" in result.output and "artifacts rebuilt" in result.output


def test_archive_holds_what_the_layout_names(demo_study: Path, tmp_path: Path) -> None:
    """Every run's outputs and inputs are packed where llmprof.common.layout puts them, and nothing else but the
    config."""
    configfile = demo_study / "config" / "demo.yaml"
    manifest = pack(configfile, tmp_path / "a.tar.gz", root=demo_study)
    packed = {entry["path"] for entry in manifest["files"]}
    config = expand_sweeps(load(configfile))
    inputs, folders = set(), [f"{STUDY.folder}/"]
    required = {STUDY.report_html, STUDY.report_markdown, STUDY.runs_table, STUDY.findings, STUDY.provenance}
    for run, spec in config["runs"].items():
        paths = RunPaths(run)
        inputs |= {nsys_report(run, spec), sqlite_export(run, spec), *run_records(run, spec).values()}
        folders.append(f"{paths.folder}/")
        required |= {paths.report_html, paths.report_markdown, paths.findings, paths.provenance}
        required |= {f"{paths.extract}/metrics.json", f"{paths.figures}/timeline.png"}
    assert required | inputs <= packed, sorted((required | inputs) - packed)
    unnamed = {p for p in packed - inputs if not p.startswith(tuple(folders))}
    assert unnamed == {"config/demo.yaml", STUDY.provenance}


@pytest.mark.parametrize(
    ("path", "update_manifest", "message"),
    [
        (
            "results/llama1b-bs16/figures/timeline.png",
            False,
            "checksum mismatch: results/llama1b-bs16/figures/timeline.png",
        ),
        ("results/llama1b-bs1/report/report.md", True, "rebuilt bytes differ: results/llama1b-bs1/report/report.md"),
        ("results/study/report.md", True, "rebuilt bytes differ: results/study/report.md"),
    ],
)
def test_verify_names_a_changed_byte(
    demo_study: Path, tmp_path: Path, path: str, update_manifest: bool, message: str
) -> None:
    tampered = _rewrite(_archive(demo_study, tmp_path / "a.tar.gz"), tmp_path / "t.tar.gz", path, update_manifest)
    result = CliRunner().invoke(main, ["verify", str(tampered), "--quiet"])
    assert result.exit_code == 1
    assert message in result.output


def test_failed_run_is_listed_in_the_study(cli_env: dict[str, str], tmp_path: Path) -> None:
    """With --keep-going the other runs complete and the study names the failed run and why."""
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes((ROOT / "resources/samples/vllm-llama1b-bs1/profile.sqlite").read_bytes()[:50_000])
    config = {
        "runs": {
            "good": {"capture": str(ROOT / "resources/samples/vllm-llama1b-bs1/profile.sqlite")},
            "broken": {"capture": str(broken)},
        }
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(["--cores", "1", "--keep-going", "--configfile", str(path)], cli_env, tmp_path)
    assert result.returncode != 0
    assert (tmp_path / "results" / "good" / "report" / "report.html").exists()
    table = pq.read_table(tmp_path / "results" / "study" / "runs.parquet").to_pandas().set_index("run")
    assert table.loc["good", "status"] == "ok" and table.loc["broken", "status"] == "failed"
    assert "truncated" in table.loc["broken", "reason"]
    report = (tmp_path / "results" / "study" / "report.md").read_text()
    assert "Run broken failed" in report and "truncated" in report
