rule compare_runs:
    input:
        unpack(get_study_inputs),
    output:
        html=report(
            STUDY.report_html,
            caption="../report/study.rst",
            category="Study",
        ),
        markdown=STUDY.report_markdown,
        table=STUDY.runs_table,
        findings=STUDY.findings,
    log:
        STUDY.log("compare_runs"),
    benchmark:
        STUDY.benchmark("compare_runs")
    params:
        manifest=get_study_manifest(),
        out=subpath(output.html, parent=True),
    shell:
        "llmprof study --manifest {params.manifest} -o {params.out:q} --force --log {log:q}"
