rule fetch_model:
    output:
        directory(MODEL.folder),
    log:
        MODEL.log,
    benchmark:
        MODEL.benchmark
    params:
        spec=get_model_spec,
    shell:
        "llmprof model {wildcards.model} --spec {params.spec} -o {output} --force --log {log}"
