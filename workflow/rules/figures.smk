rule plot_figures:
    input:
        RUN.extract,
    output:
        report(
            directory(RUN.figures),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{name}"},
        ),
    log:
        RUN.log("plot_figures"),
    benchmark:
        RUN.benchmark("plot_figures")
    conda:
        CPU_ENV
    shell:
        "llmprof figures {input:q} -o {output:q} --force --log {log:q}"
