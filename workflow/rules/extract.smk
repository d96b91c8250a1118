rule extract_metrics:
    input:
        sqlite=get_sqlite,
    output:
        directory(RUN.extract),
    log:
        RUN.log("extract_metrics"),
    benchmark:
        RUN.benchmark("extract_metrics")
    params:
        categories=get_category_args(),
    shell:
        "llmprof extract {input.sqlite:q} -o {output:q} {params.categories} --force --log {log:q}"
