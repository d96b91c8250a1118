rule record_provenance:
    input:
        unpack(get_run_artifacts),
    output:
        RUN.provenance,
    log:
        RUN.log("record_provenance"),
    params:
        config=get_run_config,
        record=get_traced_record_arg,
    conda:
        CPU_ENV
    shell:
        "llmprof provenance {wildcards.run:q} {input:q} --config {params.config} {params.record}"
        " -o {output:q} --force --log {log:q}"


rule record_study_provenance:
    input:
        study=STUDY.report_html,
        runs=get_run_provenances(),
    output:
        STUDY.provenance,
    log:
        STUDY.log("record_study_provenance"),
    params:
        config=get_study_config(),
        folder=subpath(input.study, parent=True),
    conda:
        CPU_ENV
    shell:
        "llmprof provenance study {params.folder:q} {input.runs:q} --config {params.config}"
        " -o {output:q} --force --log {log:q}"
