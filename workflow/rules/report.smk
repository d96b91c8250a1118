rule render_report:
    input:
        unpack(get_run_records),
        extract=RUN.extract,
        figures=RUN.figures,
    output:
        html=report(
            RUN.report_html,
            caption="../report/report.rst",
            category="Reports",
            labels={"run": "{run}"},
        ),
        markdown=RUN.report_markdown,
        findings=RUN.findings,
    log:
        RUN.log("render_report"),
    benchmark:
        RUN.benchmark("render_report")
    params:
        out=subpath(output.html, parent=True),
        records=get_record_args,
    conda:
        CPU_ENV
    shell:
        "llmprof report {input.extract:q} -o {params.out:q} --figures {input.figures:q} --run {wildcards.run:q}"
        " {params.records} --force --log {log:q}"
