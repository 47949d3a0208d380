# Per-experiment summary: final metric mean +- std over seeds, rounds / bytes / forward passes to target.
rule table:
    input:
        metrics=lambda w: metrics_of(w.exp),
        choices=lambda w: [f"{OUT}/tuning/{w.exp}/{m}.json" for m in EXPERIMENTS[w.exp].get("choices", {})],
        script="workflows/scripts/summarise.py",
        code=code_of("workflows/scripts/summarise.py"),
    output:
        csv=report(f"{OUT}/tables/{{exp}}.csv", caption="../report/table.rst", category="Tables"),
        md=f"{OUT}/tables/{{exp}}.md",
    wildcard_constraints:
        exp=EXPERIMENT_PATTERN,  # paper-claims.csv and claims-check.csv are the paper_claims rule's
    conda:
        ENV
    log:
        f"{OUT}/logs/tables/{{exp}}.log",
    params:
        py=PY,
        target=lambda w: EXPERIMENTS[w.exp]["target"],
        metric=lambda w: EXPERIMENTS[w.exp]["metric"],
        reference=lambda w: EXPERIMENTS[w.exp].get("reference", "decomfl"),
        tuning=lambda w: tuning_arg(w.exp),
        choices=lambda w, input: f"--choices {' '.join(input.choices)}" if input.choices else "",
        labels=lambda w: json.dumps(method_labels(EXPERIMENTS[w.exp]), sort_keys=True),
    shell:
        "{params.py} {input.script} --metrics {input.metrics} --metric {params.metric} --target {params.target} "
        "--reference {params.reference} {params.tuning} {params.choices} --labels {params.labels:q} --csv {output.csv} --md {output.md} > {log} 2>&1"


# Every reported number of the paper beside the regenerated one (tiers with `paper_results:`).
rule paper_side_by_side:
    input:
        reported=config.get("paper_results", []),
        tables=[f"{OUT}/tables/{e}.csv" for e, s in EXPERIMENTS.items() if "paper" in s],
        script="workflows/scripts/compare_paper.py",
        code=code_of("workflows/scripts/compare_paper.py"),
    output:
        csv=report(f"{OUT}/paper_results/side_by_side.csv", caption="../report/paper.rst", category="Tables"),
        md=f"{OUT}/paper_results/side_by_side.md",
    conda:
        ENV
    log:
        f"{OUT}/logs/tables/paper_side_by_side.log",
    params:
        py=PY,
        cells=" ".join(f"{s['paper']['model']}:{s['paper']['task']}" for e, s in EXPERIMENTS.items() if "paper" in s),
    shell:
        "{params.py} {input.script} --reported {input.reported} --tables {input.tables} --keys {params.cells} "
        "--csv {output.csv} --md {output.md} > {log} 2>&1"
