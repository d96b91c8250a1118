# Config validation and path lookups only; every computation lives in the llmprof package.
import json
import os
import shlex

from snakemake.utils import validate


validate(config, "../../config/schema.yaml")

RUNS = sorted(config["runs"])
MODELS = sorted(config.get("models", {}))
PROFILED = [run for run in RUNS if "model" in config["runs"][run]]


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),
    model="|".join(map(re.escape, MODELS)) or "(?!)",


def project_path(path):
    """A config path, relative paths taken from the project root."""
    return os.path.join(workflow.basedir, path)


def is_profiled(run):
    return run in PROFILED


def get_capture(wildcards):
    return project_path(config["runs"][wildcards.run]["capture"])


def get_report(wildcards):
    """The run's .nsys-rep: made by profile_run, or the configured capture."""
    if is_profiled(wildcards.run):
        return f"results/{wildcards.run}/profile/profile.nsys-rep"
    return get_capture(wildcards)


def get_sqlite(wildcards):
    """The SQLite export of a run: a configured .sqlite capture itself, or the export stage's output."""
    run = config["runs"][wildcards.run]
    if not is_profiled(wildcards.run) and run["capture"].endswith(".sqlite"):
        return get_capture(wildcards)
    return f"results/{wildcards.run}/export/profile.sqlite"


def get_model_dir(wildcards):
    return f"resources/models/{config['runs'][wildcards.run]['model']}"


def get_model_spec(wildcards):
    """The model's config entry as shell-quoted JSON, paths made absolute."""
    spec = dict(config["models"][wildcards.model])
    for key in ("architecture", "path"):
        if key in spec:
            spec[key] = project_path(spec[key])
    return shlex.quote(json.dumps(spec, sort_keys=True))


def get_run_spec(wildcards):
    """The run's config entry as shell-quoted JSON, a prompts file made absolute."""
    spec = json.loads(json.dumps(config["runs"][wildcards.run]))
    prompts = spec.get("workload", {}).get("prompts", "synthetic")
    if prompts != "synthetic":
        spec["workload"]["prompts"] = project_path(prompts)
    return shlex.quote(json.dumps(spec, sort_keys=True))


def get_run_records(wildcards):
    """The traced and untraced run records a run's report cites, where the run has them."""
    if is_profiled(wildcards.run):
        return {
            "record": f"results/{wildcards.run}/profile/run.json",
            "baseline": f"results/{wildcards.run}/baseline/run.json",
        }
    run = config["runs"][wildcards.run]
    keys = {"record": "run_record", "baseline": "baseline_record"}
    return {name: project_path(run[key]) for name, key in keys.items() if key in run}


def get_record_args(wildcards, input):
    return " ".join(f"--{name} {input[name]}" for name in ("record", "baseline") if name in input.keys())


def get_category_args():
    """--category options that replace the built-in kernel patterns, when the config has any."""
    return " ".join(
        f"--category {shlex.quote(f'{name}={pattern}')}"
        for name, pattern in config.get("categories", {}).items()
    )


def get_final_targets():
    return [f"results/{run}/report/report.html" for run in RUNS]
