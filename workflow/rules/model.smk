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
        "llmprof model {wildcards.model:q} --spec {params.spec} -o {output:q} --force --log {log:q}"
