rule profile_run:
    input:
        model=get_model_dir,
    output:
        report="results/{run}/profile/profile.nsys-rep",
        record="results/{run}/profile/run.json",
    log:
        "logs/{run}/profile_run.log",
    benchmark:
        "results/{run}/benchmarks/profile_run.tsv"
    params:
        spec=get_run_spec,
        nsys=lookup(dpath="nsys/executable", within=config, default="nsys"),
        out=subpath(output.record, parent=True),
    resources:
        gpu=1,
    shell:
        "llmprof profile {wildcards.run} --spec {params.spec} --model {input.model} -o {params.out}"
        " --nsys {params.nsys} --force --log {log}"


rule baseline_run:
    input:
        model=get_model_dir,
    output:
        "results/{run}/baseline/run.json",
    log:
        "logs/{run}/baseline_run.log",
    benchmark:
        "results/{run}/benchmarks/baseline_run.tsv"
    params:
        spec=get_run_spec,
    resources:
        gpu=1,
    shell:
        "llmprof baseline {wildcards.run} --spec {params.spec} --model {input.model} -o {output} --force --log {log}"
