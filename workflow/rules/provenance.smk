rule record_provenance:
    input:
        unpack(get_run_artifacts),
    output:
        "results/{run}/provenance.json",
    log:
        "logs/{run}/record_provenance.log",
    params:
        config=get_run_config,
        record=get_traced_record_arg,
    shell:
        "llmprof provenance {wildcards.run} {input} --config {params.config} {params.record}"
        " -o {output} --force --log {log}"


rule record_study_provenance:
    input:
        study="results/study/report.html",
        runs=expand("results/{run}/provenance.json", run=RUNS),
    output:
        "results/study/provenance.json",
    log:
        "logs/study/record_study_provenance.log",
    params:
        config=get_study_config(),
        folder=subpath(input.study, parent=True),
    shell:
        "llmprof provenance study {params.folder} {input.runs} --config {params.config}"
        " -o {output} --force --log {log}"
