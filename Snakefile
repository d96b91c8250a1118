# llmprof: Nsight Systems captures of LLM inference -> Parquet tables, figures and reports.
# The study is config/config.yaml by default; `--configfile config/demo.yaml` runs the bundled demo.
from snakemake.utils import min_version

min_version("8.20")


# A --configfile on the command line replaces the default study instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# The image of config key `container` (default ghcr.io/llmprof/llmprof:0.1.0), for --sdm apptainer.
container: get_container_image()


report: "workflow/report/workflow.rst"


include: "workflow/rules/model.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/study.smk"


# With --keep-going, a failed run stops the study job: write the study of what finished, failed runs listed.
onerror:
    manifest, folder = get_study_manifest(), STUDY.folder
    shell("llmprof study --manifest {manifest} -o {folder:q} --force --quiet || true")


rule all:
    input:
        get_final_targets(),
    default_target: True
