rule extract_metrics:
    input:
        sqlite=get_sqlite,
    output:
        directory("results/{run}/extract"),
    log:
        "logs/{run}/extract_metrics.log",
    benchmark:
        "results/{run}/benchmarks/extract_metrics.tsv"
    params:
        categories=get_category_args(),
    shell:
        "llmprof extract {input.sqlite} -o {output} {params.categories} --force --log {log}"
