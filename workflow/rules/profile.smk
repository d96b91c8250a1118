rule profile_run:
    input:
        model=get_model_dir,
    output:
        report=RUN.profile_report,
        record=RUN.profile_record,
    log:
        RUN.log("profile_run"),
    benchmark:
        RUN.benchmark("profile_run")
    params:
        spec=get_run_spec,
        nsys=lookup(dpath="nsys/executable", within=config, default="nsys"),
        out=subpath(output.record, parent=True),
    resources:
        gpu=get_gpus,
        gres=get_gpu_gres,
    shell:
        "llmprof profile {wildcards.run:q} --spec {params.spec} --model {input.model:q} -o {params.out:q}"
        " --nsys {params.nsys:q} --force --log {log:q}"


rule baseline_run:
    input:
        model=get_model_dir,
    output:
        RUN.baseline_record,
    log:
        RUN.log("baseline_run"),
    benchmark:
        RUN.benchmark("baseline_run")
    params:
        spec=get_run_spec,
    resources:
        gpu=get_gpus,
        gres=get_gpu_gres,
    shell:
        "llmprof baseline {wildcards.run:q} --spec {params.spec} --model {input.model:q} -o {output:q} --force --log {log:q}"
