rule extract_metrics:
    input:
        unpack(get_run_records),
        sqlite=get_sqlite,
    output:
        directory(RUN.extract),
    log:
        RUN.log("extract_metrics"),
    benchmark:
        RUN.benchmark("extract_metrics")
    params:
        categories=get_category_args(),
        records=get_record_args,
    conda:
        CPU_ENV
    shell:
        "llmprof extract {input.sqlite:q} -o {output:q} {params.categories} {params.records} --force --log {log:q}"
