rule render_report:
    input:
        unpack(get_run_records),
        extract="results/{run}/extract",
        figures="results/{run}/figures",
    output:
        html=report(
            "results/{run}/report/report.html",
            caption="../report/report.rst",
            category="Reports",
            labels={"run": "{run}"},
        ),
        markdown="results/{run}/report/report.md",
        findings="results/{run}/report/findings.json",
    log:
        "logs/{run}/render_report.log",
    benchmark:
        "results/{run}/benchmarks/render_report.tsv"
    params:
        out=subpath(output.html, parent=True),
        records=get_record_args,
    shell:
        "llmprof report {input.extract} -o {params.out} --figures {input.figures} --run {wildcards.run}"
        " {params.records} --force --log {log}"
