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
        "llmprof export {input:q} -o {output:q} --nsys {params.nsys:q} --force --log {log:q}"
