# Convergence vs rounds and vs bytes, mean +- std over seeds; a figure script reads runs, never trains.
rule convergence_figure:
    input:
        metrics=lambda w: metrics_of(w.exp),
        script="figures/convergence.py",
    output:
        png=report(f"{OUT}/figures/convergence_{{exp}}.png", caption="../report/convergence.rst",
                   category="Convergence"),
        pdf=f"{OUT}/figures/convergence_{{exp}}.pdf",
    log:
        f"{OUT}/logs/figures/convergence_{{exp}}.log",
    params:
        py=PY,
        metric=lambda w: config["experiments"][w.exp]["metric"],
        root=lambda w: f"{OUT}/runs/{w.exp}",
        title=lambda w: config["experiments"][w.exp].get("title", w.exp),
    shell:
        "{params.py} {input.script} --root {params.root} --metric {params.metric} --title {params.title:q} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"
