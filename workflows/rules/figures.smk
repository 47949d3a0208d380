# Convergence vs rounds and vs bytes, mean +- std over seeds; a figure script reads runs, never trains.
rule convergence_figure:
    input:
        metrics=lambda w: metrics_of(w.exp),
        table=f"{OUT}/tables/{{exp}}.csv",
        script="figures/convergence.py",
        code=code_of("figures/convergence.py"),
    output:
        png=report(f"{OUT}/figures/convergence_{{exp}}.png", caption="../report/convergence.rst",
                   category="Convergence"),
        pdf=f"{OUT}/figures/convergence_{{exp}}.pdf",
        data=f"{OUT}/figures/convergence_{{exp}}.data.json",  # figures/style.save: what it draws
    conda:
        ENV
    log:
        f"{OUT}/logs/figures/convergence_{{exp}}.log",
    params:
        py=PY,
        metric=lambda w: EXPERIMENTS[w.exp]["metric"],
        target=lambda w: EXPERIMENTS[w.exp]["target"],
        title=lambda w: EXPERIMENTS[w.exp].get("title", w.exp),
        tuning=lambda w: tuning_arg(w.exp),
    shell:
        "{params.py} {input.script} --metrics {input.metrics} --metric {params.metric} --target {params.target} "
        "--title {params.title:q} {params.tuning} --table {input.table} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


# An ablation sweep: the tables of the experiments it names, one x value each.
rule sweep_figure:
    input:
        tables=lambda w: [f"{OUT}/tables/{e}.csv" for e in config["sweeps"][w.sweep]["points"]],
        script="figures/sweep.py",
        code=code_of("figures/sweep.py"),
    output:
        png=report(f"{OUT}/figures/sweep_{{sweep}}.png", caption="../report/sweep.rst", category="Ablations"),
        pdf=f"{OUT}/figures/sweep_{{sweep}}.pdf",
        data=f"{OUT}/figures/sweep_{{sweep}}.data.json",  # figures/style.save: what it draws
    conda:
        ENV
    log:
        f"{OUT}/logs/figures/sweep_{{sweep}}.log",
    params:
        py=PY,
        x=lambda w: " ".join(str(v) for v in config["sweeps"][w.sweep]["points"].values()),
        xlabel=lambda w: config["sweeps"][w.sweep]["xlabel"],
        xscale=lambda w: config["sweeps"][w.sweep].get("xscale", "linear"),
        title=lambda w: config["sweeps"][w.sweep]["title"],
    shell:
        "{params.py} {input.script} --tables {input.tables} --x {params.x} --xlabel {params.xlabel:q} "
        "--xscale {params.xscale} --title {params.title:q} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


# Paper Fig. 5 (right): histogram of the learned diagonal H of finished runs (read from their checkpoints;
# the metrics.csv input guarantees the run ended, and a run's checkpoint.pt is its final state).
rule curvature_histogram:
    input:
        metrics=lambda w: [f"{OUT}/runs/{w.exp}/{m}/seed0/metrics.csv" for m in histogram_methods(w.exp)],
        script="figures/curvature_histogram.py",
        code=code_of("figures/curvature_histogram.py"),
    output:
        png=report(f"{OUT}/figures/curvature_histogram_{{exp}}.png", caption="../report/histogram.rst",
                   category="Curvature"),
        pdf=f"{OUT}/figures/curvature_histogram_{{exp}}.pdf",
        data=f"{OUT}/figures/curvature_histogram_{{exp}}.data.json",  # figures/style.save: what it draws
    conda:
        ENV
    log:
        f"{OUT}/logs/figures/curvature_histogram_{{exp}}.log",
    params:
        py=PY,
        checkpoints=lambda w: [f"{OUT}/runs/{w.exp}/{m}/seed0/checkpoint.pt" for m in histogram_methods(w.exp)],
        labels=lambda w: " ".join(shlex.quote(method_labels(EXPERIMENTS[w.exp])[m]["label"])
                                  for m in histogram_methods(w.exp)),
        title=lambda w: f"learned H, {EXPERIMENTS[w.exp].get('title', w.exp)}",
    shell:
        "{params.py} {input.script} --checkpoints {params.checkpoints} --labels {params.labels} "
        "--title {params.title:q} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


# Paper Fig. 4 with measurements: zeta of several H (incl. HiSo's learned one) at matched smoothness.  The
# learned H comes from an ordinary run (rule zeta_run); the figure only reads it.
rule zeta_run:
    input:
        base="workflows/config/base/zeta.yaml",
    output:
        f"{OUT}/runs/zeta/hiso/seed0/metrics.csv",
    conda:
        ENV
    log:
        f"{OUT}/logs/zeta/hiso/seed0.log",
    params:
        py=PY,
        rounds=config.get("zeta_rounds", 2000),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{params.py} -m hiso run --config {input.base} --set federation.rounds={params.rounds} "
        "--set run.eval_every={params.rounds} --set name=zeta-hiso-s0 --out {params.out} --replace-different "
        "> {log} 2>&1"


rule zeta_figure:
    input:
        script="figures/zeta.py",
        code=code_of("figures/zeta.py"),
        metrics=f"{OUT}/runs/zeta/hiso/seed0/metrics.csv",
    output:
        png=report(f"{OUT}/figures/zeta.png", caption="../report/zeta.rst", category="Curvature"),
        pdf=f"{OUT}/figures/zeta.pdf",
        data=f"{OUT}/figures/zeta.data.json",  # figures/style.save: what it draws
        csv=f"{OUT}/tables/zeta.csv",
    conda:
        ENV
    log:
        f"{OUT}/logs/figures/zeta.log",
    params:
        py=PY,
        run=lambda w, input: os.path.dirname(input.metrics),
    shell:
        "{params.py} {input.script} --run {params.run} --csv {output.csv} --png {output.png} "
        "--pdf {output.pdf} > {log} 2>&1"


# Step-size sensitivity (experiments tuned by the full-grid protocol, `scan_seeds:`): every method's tuning score
# against its step size, from the choice files.
rule sensitivity_figure:
    input:
        choices=lambda w: [f"{OUT}/tuning/{w.exp}/{m}.json" for m in EXPERIMENTS[w.exp].get("scans", {})],
        script="figures/sensitivity.py",
        code=code_of("figures/sensitivity.py"),
    output:
        png=report(f"{OUT}/figures/sensitivity_{{exp}}.png", caption="../report/sensitivity.rst", category="Tuning"),
        pdf=f"{OUT}/figures/sensitivity_{{exp}}.pdf",
        data=f"{OUT}/figures/sensitivity_{{exp}}.data.json",  # figures/style.save: what it draws
    conda:
        ENV
    log:
        f"{OUT}/logs/figures/sensitivity_{{exp}}.log",
    params:
        py=PY,
        metric=lambda w: EXPERIMENTS[w.exp]["metric"],
        labels=lambda w: json.dumps(method_labels(EXPERIMENTS[w.exp]), sort_keys=True),
        title=lambda w: EXPERIMENTS[w.exp].get("title", w.exp),
    shell:
        "{params.py} -m figures.sensitivity --choices {input.choices} --metric {params.metric} "
        "--labels {params.labels:q} --title {params.title:q} --png {output.png} --pdf {output.pdf} > {log} 2>&1"
