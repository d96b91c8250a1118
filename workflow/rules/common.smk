# Config validation and path lookups only; every computation lives in the llmprof package.
import json
import os
import shlex

from snakemake.utils import validate

from llmprof.common.config import expand_sweeps


validate(config, "../../config/schema.yaml", set_default=False)  # defaults are filled per stage by llmprof
config.update(expand_sweeps(config))

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


def run_records(run):
    """The traced and untraced run records a run's report cites, where the run has them."""
    if is_profiled(run):
        return {"record": f"results/{run}/profile/run.json", "baseline": f"results/{run}/baseline/run.json"}
    keys = {"record": "run_record", "baseline": "baseline_record"}
    return {name: project_path(config["runs"][run][key]) for name, key in keys.items() if key in config["runs"][run]}


def get_run_records(wildcards):
    return run_records(wildcards.run)


def record_options(input, names):
    """--record/--baseline options for the run records among a job's inputs."""
    return " ".join(f"--{name} {input[name]}" for name in names if name in input.keys())


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
    artifacts = {
        "extract": f"results/{wildcards.run}/extract",
        "figures": f"results/{wildcards.run}/figures",
        "report": f"results/{wildcards.run}/report/report.html",
        "sqlite": get_sqlite(wildcards),
    }
    return {**artifacts, **get_run_records(wildcards)}


def get_run_config(wildcards):
    return shlex.quote(json.dumps(config["runs"][wildcards.run], sort_keys=True))


def get_study_config():
    return shlex.quote(json.dumps(config, sort_keys=True))


def get_study_manifest():
    """The study's runs as shell-quoted JSON for `llmprof study`."""
    entries = []
    for run in RUNS:
        records = run_records(run)
        entries.append(
            {
                "run": run,
                "extract": f"results/{run}/extract",
                "logs": f"logs/{run}",
                "sweep": config["runs"][run].get("sweep"),
                **records,
            }
        )
    return shlex.quote(json.dumps(entries, sort_keys=True))


def get_study_inputs(wildcards):
    inputs = {f"extract_{run}": f"results/{run}/extract" for run in RUNS}
    for run in RUNS:
        inputs.update({f"{name}_{run}": path for name, path in run_records(run).items()})
    return inputs


def get_final_targets():
    per_run = [f"results/{run}/{name}" for run in RUNS for name in ("report/report.html", "provenance.json")]
    return per_run + ["results/study/report.html", "results/study/provenance.json"]
