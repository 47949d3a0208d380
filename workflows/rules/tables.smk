# Per-experiment summary: final metric mean +- std over seeds, rounds / bytes / forward passes to target.
rule table:
    input:
        metrics=lambda w: metrics_of(w.exp),
        script="workflows/scripts/summarise.py",
    output:
        csv=report(f"{OUT}/tables/{{exp}}.csv", caption="../report/table.rst", category="Tables"),
        md=f"{OUT}/tables/{{exp}}.md",
    log:
        f"{OUT}/logs/tables/{{exp}}.log",
    params:
        py=PY,
        target=lambda w: config["experiments"][w.exp]["target"],
        metric=lambda w: config["experiments"][w.exp]["metric"],
        root=lambda w: f"{OUT}/runs/{w.exp}",
    shell:
        "{params.py} {input.script} --root {params.root} --metric {params.metric} --target {params.target} "
        "--csv {output.csv} --md {output.md} > {log} 2>&1"
