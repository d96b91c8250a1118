rule write_study_manifest:
    output:
        STUDY.manifest,
    log:
        STUDY.log("write_study_manifest"),
    params:
        manifest=get_study_manifest(),
    shell:
        "printf '%s\\n' {params.manifest} > {output:q} 2> {log:q}"


rule compare_runs:
    input:
        unpack(get_study_inputs),
        manifest=STUDY.manifest,
    output:
        html=report(
            STUDY.report_html,
            caption="../report/study.rst",
            category="Study",
        ),
        markdown=STUDY.report_markdown,
        figures=report(
            directory(STUDY.figures),
            patterns=["{name}.png"],
            caption="../report/study_figures.rst",
            category="Study",
            labels={"figure": "{name}"},
        ),
        table=STUDY.runs_table,
        findings=STUDY.findings,
    log:
        STUDY.log("compare_runs"),
    benchmark:
        STUDY.benchmark("compare_runs")
    params:
        out=subpath(output.html, parent=True),
    conda:
        CPU_ENV
    shell:
        "llmprof study --manifest {input.manifest:q} -o {params.out:q} --force --log {log:q}"
