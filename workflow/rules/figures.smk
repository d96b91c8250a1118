rule plot_figures:
    input:
        "results/{run}/extract",
    output:
        report(
            directory("results/{run}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "{name}"},
        ),
    log:
        "logs/{run}/plot_figures.log",
    benchmark:
        "results/{run}/benchmarks/plot_figures.tsv"
    shell:
        "llmprof figures {input} -o {output} --force --log {log}"
