rule fetch_model:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "logs/models/{model}.benchmark.tsv"
    params:
        spec=get_model_spec,
    shell:
        "llmprof model {wildcards.model} --spec {params.spec} -o {output} --force --log {log}"
