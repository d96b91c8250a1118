rule export_sqlite:
    input:
        get_report,
    output:
        RUN.exported_sqlite,
    log:
        RUN.log("export_sqlite"),
    benchmark:
        RUN.benchmark("export_sqlite")
    params:
        nsys=lookup(dpath="nsys/executable", within=config, default="nsys"),
    shell:
        "llmprof export {input} -o {output} --nsys {params.nsys} --force --log {log}"
