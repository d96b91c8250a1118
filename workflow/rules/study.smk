rule compare_runs:
    input:
        unpack(get_study_inputs),
    output:
        html=report(
            "results/study/report.html",
            caption="../report/study.rst",
            category="Study",
        ),
        markdown="results/study/report.md",
        table="results/study/runs.parquet",
        findings="results/study/findings.json",
    log:
        "logs/study/compare_runs.log",
    benchmark:
        "logs/study/compare_runs.benchmark.tsv"
    params:
        manifest=get_study_manifest(),
        out=subpath(output.html, parent=True),
    shell:
        "llmprof study --manifest {params.manifest} -o {params.out} --force --log {log}"
