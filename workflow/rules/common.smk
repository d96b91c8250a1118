# Config validation and path lookups only; every computation lives in the llmprof package, every path in
# llmprof.common.layout (which `llmprof archive` and `llmprof verify` read too).
import json
import os
import shlex

from llmprof.common import layout
from llmprof.common.config import container_image, expand_sweeps, validate_file_config
from llmprof.common.layout import STUDY, ModelPaths, RunPaths


# The schema in config/schema.yaml; defaults are filled per stage by llmprof. Errors name the file and line.
validate_file_config(config, (workflow.overwrite_configfiles or workflow.configfiles or ["config/config.yaml"])[-1])
config.update(expand_sweeps(config))

#: The conda environment of the CPU-side rules (`--sdm conda`); export, profile and baseline need the container.
CPU_ENV = "../envs/llmprof.yaml"

RUNS = sorted(config["runs"])
MODELS = sorted(config.get("models", {}))
RUN = RunPaths("{run}")
MODEL = ModelPaths("{model}")


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),
    model="|".join(map(re.escape, MODELS)) or "(?!)",


# The project root relative to the working folder ("." when Snakemake runs in the project): config paths are
# named from it, never made absolute, so a copied or moved project keeps its finished jobs.
PROJECT = os.path.relpath(workflow.basedir)


def project_path(path):
    """A config path, relative paths taken from the project root."""
    return layout.project_file(PROJECT, path)


def get_container_image():
    return container_image(config)


def run_config(run):
    return config["runs"][run]


def get_report(wildcards):
    """The run's .nsys-rep: made by profile_run, or the configured capture."""
    return layout.nsys_report(wildcards.run, run_config(wildcards.run), PROJECT)


def get_sqlite(wildcards):
    """The SQLite export of a run: a configured .sqlite capture itself, or the export stage's output."""
    return layout.sqlite_export(wildcards.run, run_config(wildcards.run), PROJECT)


def get_model_dir(wildcards):
    return ModelPaths(run_config(wildcards.run)["model"]).folder


def get_model_spec(wildcards):
    """The model's config entry as shell-quoted JSON, paths taken from the project root."""
    spec = dict(config["models"][wildcards.model])
    for key in ("architecture", "path"):
        if key in spec:
            spec[key] = project_path(spec[key])
    return shlex.quote(json.dumps(spec, sort_keys=True))


def get_gpus(wildcards):
    """GPUs the run's engine spans (its tensor-parallel size): what its GPU jobs ask for."""
    return int(run_config(wildcards.run).get("engine", {}).get("tensor_parallel_size", 1))


def get_gpu_gres(wildcards):
    """The same as a SLURM generic resource."""
    return f"gpu:{get_gpus(wildcards)}"


def get_run_spec(wildcards):
    """The run's config entry as shell-quoted JSON, a prompts file taken from the project root."""
    spec = json.loads(json.dumps(run_config(wildcards.run)))
    prompts = spec.get("workload", {}).get("prompts", "synthetic")
    if prompts != "synthetic":
        spec["workload"]["prompts"] = project_path(prompts)
    return shlex.quote(json.dumps(spec, sort_keys=True))


def run_records(run):
    """The traced and untraced run records a run's report cites, where the run has them."""
    return layout.run_records(run, run_config(run), PROJECT)


def get_run_records(wildcards):
    return run_records(wildcards.run)


def record_options(input, names):
    """--record/--baseline options for the run records among a job's inputs."""
    return " ".join(f"--{name} {shlex.quote(input[name])}" for name in names if name in input.keys())


def get_record_args(wildcards, input):
    return record_options(input, ("record", "baseline"))


def get_traced_record_arg(wildcards, input):
    return record_options(input, ("record",))


def get_category_args():
    """--category options that replace the built-in kernel patterns, when the config has any."""
    return " ".join(
        f"--category {shlex.quote(f'{name}={pattern}')}"
        for name, pattern in config.get("categories", {}).items()
    )


def get_run_artifacts(wildcards):
    """Everything a run produced (and the capture it started from), for its provenance."""
    paths = RunPaths(wildcards.run)
    artifacts = {
        "extract": paths.extract,
        "figures": paths.figures,
        "report": paths.report_html,
        "sqlite": get_sqlite(wildcards),
    }
    return {**artifacts, **get_run_records(wildcards)}


def get_run_config(wildcards):
    return shlex.quote(json.dumps(run_config(wildcards.run), sort_keys=True))


def get_study_config():
    return shlex.quote(json.dumps(config, sort_keys=True))


def get_study_manifest():
    """The study's runs as shell-quoted JSON: the manifest file's content (and the error handler's inline manifest)."""
    return shlex.quote(json.dumps(layout.study_manifest(config["runs"], PROJECT), sort_keys=True))


def get_study_inputs(wildcards):
    """What the manifest names that jobs make: every run's extract folder and run records."""
    manifest = layout.study_manifest(config["runs"], PROJECT)
    return {
        f"{key}_{entry['run']}": entry[key]
        for entry in manifest
        for key in ("extract", "record", "baseline")
        if key in entry
    }


def get_run_provenances():
    return [RunPaths(run).provenance for run in RUNS]


def get_final_targets():
    per_run = [path for run in RUNS for path in (RunPaths(run).report_html, RunPaths(run).provenance)]
    return per_run + [STUDY.report_html, STUDY.provenance]
