"""The conventions Snakemake users expect: the workflow catalog file, conda environments for the CPU-side rules
(--sdm conda), a configurable, digest-pinnable container image (--sdm apptainer), and a README that shows them."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, snakemake

from llmprof.common import config as llmprof_config
from llmprof.common.config import container_image
from llmprof.common.errors import ConfigError

RULES = ROOT / "workflow" / "rules"
#: Rules that run on the CPU with llmprof alone, and so have a conda environment.
CPU_RULES = {
    "extract_metrics",
    "plot_figures",
    "render_report",
    "compare_runs",
    "record_provenance",
    "record_study_provenance",
}
#: Rules that need nsys, a GPU or vLLM: the container only.
CONTAINER_RULES = {"export_sqlite", "profile_run", "baseline_run", "fetch_model"}
DIGEST = "sha256:" + "0123456789abcdef" * 4
BLOCK = re.compile(r"^rule (\w+):\n((?:(?:    .*)?\n)+)", re.MULTILINE)


def rule_envs() -> dict[str, str | None]:
    """Every rule of workflow/rules → the conda environment file it declares (a path from its .smk), or None."""
    constants = dict(re.findall(r'^([A-Z_]+) = "([^"]+)"$', (RULES / "common.smk").read_text(), re.MULTILINE))
    envs: dict[str, str | None] = {}
    for smk in sorted(RULES.glob("*.smk")):
        for name, body in BLOCK.findall(smk.read_text()):
            declared = re.search(r"^    conda:\n        (.+)$", body, re.MULTILINE)
            value = declared.group(1).strip() if declared else None
            envs[name] = constants.get(value, value.strip('"')) if value else None
    return envs


def test_the_catalog_file_says_how_to_run_the_workflow() -> None:
    usage = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["software-stack-deployment"] == {"conda": True, "apptainer": True, "apptainer+conda": False}
    assert usage["report"] is True and usage["mandatory-flags"]["desc"]
    assert (ROOT / "Snakefile").exists() and (ROOT / "config" / "README.md").exists()


def test_cpu_rules_have_a_conda_environment_and_gpu_rules_the_container() -> None:
    envs = rule_envs()
    assert CPU_RULES | CONTAINER_RULES <= set(envs)
    for rule in CPU_RULES:
        assert envs[rule] is not None, f"{rule} declares no conda environment"
        path = (RULES / str(envs[rule])).resolve()
        env = yaml.safe_load(path.read_text())
        assert path.parent == ROOT / "workflow" / "envs" and "conda-forge" in env["channels"]
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert (path.parent / pip[0]).resolve() == ROOT  # llmprof: this project, installed by pip
        assert any(str(d).startswith("python") for d in env["dependencies"])
    for rule in CONTAINER_RULES:
        assert envs[rule] is None, f"{rule} needs nsys or a GPU: it runs in the container"


def test_the_container_image_comes_from_the_config() -> None:
    assert container_image({}) == "docker://ghcr.io/llmprof/llmprof:0.1.0"
    assert container_image({"container": {"tag": "0.2.0"}}) == "docker://ghcr.io/llmprof/llmprof:0.2.0"
    pinned = {"container": {"image": "registry.example.org:5000/lab/llmprof", "digest": DIGEST}}
    assert container_image(pinned) == f"docker://registry.example.org:5000/lab/llmprof@{DIGEST}"


@pytest.mark.parametrize(
    ("container", "key"),
    [
        ({"digest": "sha256:abc"}, "container/digest"),
        ({"image": "Bad Name"}, "container/image"),
        ({"tag": "a:b"}, "container/tag"),
        ({"registry": "x"}, "container/registry"),
    ],
)
def test_a_bad_container_is_rejected_naming_the_key(container: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        llmprof_config.validate({"runs": {"a": {"capture": "x.sqlite"}}, "container": container})


def test_sdm_apptainer_pulls_the_configured_image(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A dry run with --sdm apptainer names the image of the config (an apptainer stub answers the version)."""
    stub = tmp_path / "bin" / "apptainer"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "apptainer version 1.3.4"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    for run in demo["runs"].values():
        for key in ("capture", "run_record", "baseline_record"):
            run[key] = str(ROOT / run[key])
    configfile = tmp_path / "pinned.yaml"
    configfile.write_text(yaml.safe_dump({**demo, "container": {"digest": DIGEST}}))
    env = {**cli_env, "PATH": f"{stub.parent}:{cli_env['PATH']}"}
    result = snakemake(["-n", "--sdm", "apptainer", "--configfile", str(configfile)], env, tmp_path / "work")
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-2000:]
    assert f"image docker://ghcr.io/llmprof/llmprof@{DIGEST} will be pulled" in said


def test_the_readme_shows_sdm_apptainer_and_conda() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "--sdm apptainer" in readme and "--sdm conda" in readme and "--use-singularity" in readme
