# A tier's results page (tiers with `page:`): <results>/pages/<name>.md with its tables and figures copied into
# <results>/pages/<name>/, ready to publish as docs/results/ (cp -r <results>/pages/* docs/results/); with
# `runs: true` its runs and step-size choices too, from which the page is rebuilt without computing.
rule results_page:
    input:
        tables=lambda w: [f"{OUT}/tables/{e}.csv" for e in EXPERIMENTS]
        + ([f"{OUT}/tables/paper-claims.csv", f"{OUT}/tables/claims-check.csv"] if config["page"].get("paper_claims")
           else []),
        figures=lambda w: [f"{OUT}/figures/convergence_{e}.{ext}" for e in EXPERIMENTS for ext in ("png", "data.json")]
        + [f"{OUT}/figures/sweep_{n}.{ext}" for n in page_sweeps() for ext in ("png", "data.json")]
        + [f"{OUT}/figures/sensitivity_{e}.{ext}" for e in page_sensitivity() for ext in ("png", "data.json")],
        readings=lambda w: config["page"].get("readings", []),
        runs=lambda w: page_runs() if config["page"].get("runs") else [],
        choices=lambda w: page_choices() if config["page"].get("runs") else [],
        script="workflows/scripts/results_page.py",
        code=code_of("workflows/scripts/results_page.py"),
        archive=code_of("workflows/scripts/page_runs.py") if (config.get("page") or {}).get("runs") else [],
    output:
        md=f"{OUT}/pages/{{page}}.md",
        folder=directory(f"{OUT}/pages/{{page}}"),
    wildcard_constraints:
        page=config["page"]["name"] if config.get("page") else "(?!)",  # the tier's page only (a study writes its own)
    conda:
        ENV
    log:
        f"{OUT}/logs/pages/{{page}}.log",
    params:
        py=PY,
        title=lambda w: config["page"]["title"],
        experiments=lambda w: " ".join(EXPERIMENTS),
        sweeps=lambda w: " ".join(page_sweeps()),
        sensitivity=lambda w: " ".join(page_sensitivity()),
        readings=lambda w, input: f"--readings {input.readings}" if input.readings else "",
        methods=lambda w: f"--methods {' '.join(shlex.quote(m) for m in config['methods'])}" if config.get("methods") else "",
        # `runs: true`: every run and choice the page stands on, beside it (workflows/scripts/page_runs.py)
        archive=lambda w, input, output: (f"&& {PY} workflows/scripts/page_runs.py archive --results {OUT} "
                                          f"--to {output.folder} --runs {' '.join(input.runs)} "
                                          f"--choices {' '.join(input.choices)} >> {OUT}/logs/pages/{w.page}.log 2>&1")
                                         if input.runs else "",
        command=lambda w: page_command(),
        commit=COMMIT,
        date=TODAY,
    shell:
        "mkdir -p {output.folder}/tables {output.folder}/figures && cp {input.tables} {output.folder}/tables/ && "
        "cp {input.figures} {output.folder}/figures/ && "
        "{params.py} {input.script} --title {params.title:q} --tables {output.folder}/tables "
        "--figures-rel {wildcards.page}/figures --experiments {params.experiments} --sweeps {params.sweeps} "
        "--sensitivity {params.sensitivity} "
        "{params.readings} {params.methods} --command {params.command:q} --commit {params.commit} --date {params.date} "
        "--md {output.md} > {log} 2>&1 {params.archive}"


# The paper's claims as ranges over its tables' cells (pages with `paper_claims: true`), for the readings to cite,
# and each experiment's measured counterpart beside them (claims-check.csv: holds or not, within the range or not).
rule paper_claims:
    input:
        reported="paper_results/reported.csv",
        tables=lambda w: [f"{OUT}/tables/{e}.csv" for e in EXPERIMENTS],
        script="workflows/scripts/paper_claims.py",
        code=code_of("workflows/scripts/paper_claims.py"),
    output:
        csv=f"{OUT}/tables/paper-claims.csv",
        check=f"{OUT}/tables/claims-check.csv",
    conda:
        ENV
    log:
        f"{OUT}/logs/tables/paper-claims.log",
    params:
        py=PY,
    shell:
        "{params.py} {input.script} --reported {input.reported} --csv {output.csv} --tables {input.tables} "
        "--check {output.check} > {log} 2>&1"
