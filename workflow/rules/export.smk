rule export_sqlite:
    input:
        get_report,
    output:
        "results/{run}/export/profile.sqlite",
    log:
        "logs/{run}/export_sqlite.log",
    benchmark:
        "results/{run}/benchmarks/export_sqlite.tsv"
    params:
        nsys=lookup(dpath="nsys/executable", within=config, default="nsys"),
    shell:
        "llmprof export {input} -o {output} --nsys {params.nsys} --force --log {log}"
