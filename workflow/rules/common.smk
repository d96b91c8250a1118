# Config validation and path lookups only; every computation lives in the llmprof package.
import os
import shlex

from snakemake.utils import validate


validate(config, "../../config/schema.yaml")

RUNS = sorted(config["runs"])


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),


def get_capture(wildcards):
    """The run's capture path, relative paths taken from the project root."""
    return os.path.join(workflow.basedir, config["runs"][wildcards.run]["capture"])


def is_sqlite(run):
    return config["runs"][run]["capture"].endswith(".sqlite")


def get_sqlite(wildcards):
    """The SQLite export of a run: the capture itself, or the export stage's output."""
    if is_sqlite(wildcards.run):
        return get_capture(wildcards)
    return f"results/{wildcards.run}/export/profile.sqlite"


def get_category_args():
    """--category options that replace the built-in kernel patterns, when the config has any."""
    return " ".join(
        f"--category {shlex.quote(f'{name}={pattern}')}"
        for name, pattern in config.get("categories", {}).items()
    )


def get_final_targets():
    return [f"results/{run}/report/report.html" for run in RUNS]
