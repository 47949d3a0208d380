# One federated run per (experiment, method, seed), through the same CLI a user would type.  A run resumes
# from its last checkpoint, so `retries` (tier config) continue a job that the cluster killed.
rule run:
    input:
        base=lambda w: EXPERIMENTS[w.exp]["base"],
        choice=lambda w: choice_file(w.exp, w.method, w.seed),
        fixtures=[f"{OUT}/fixtures/hub-lock.json"] if config.get("rehearsal") else [],
    output:
        f"{OUT}/runs/{{exp}}/{{method}}/seed{{seed}}/metrics.csv",
    wildcard_constraints:
        exp=EXPERIMENT_PATTERN,  # the tier's experiments only (the zeta run has its own rule)
    conda:
        ENV
    log:
        f"{OUT}/logs/{{exp}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/{{exp}}/{{method}}/seed{{seed}}.tsv"
    threads: lambda w: EXPERIMENTS[w.exp].get("threads", 1)
    priority: lambda w: EXPERIMENTS[w.exp].get("priority", 0)
    retries: config.get("retries", 0)
    resources:
        gpu=lambda w: EXPERIMENTS[w.exp].get("gpu", 0),
        mem_mb=lambda w, attempt: resource(w.exp, "mem_mb", 4000),
        runtime=lambda w, attempt: resource(w.exp, "runtime", 60),
    params:
        py=PY,
        sets=lambda w: set_args(w.exp, w.method, w.seed),
        set_file=lambda w, input: f"--set-file {input.choice}" if input.choice else "",
        out=lambda w: f"{OUT}/runs/{w.exp}/{w.method}/seed{w.seed}",
        gpus=lambda w: "--gpu-slot" if EXPERIMENTS[w.exp].get("gpu", 0) else "",
        hub=f"--hub-mirror {shlex.quote(HUB_MIRROR)}" if HUB_MIRROR else "",
        # planning refused runs of other configs (plan.check_runs) unless the tier was told to replace them
        replace="--replace-different" if config.get("replace_different") else "",
    shell:
        "{params.py} -m hiso run --config {input.base} {params.set_file} {params.sets} --set seed={wildcards.seed} "
        "--set name={wildcards.exp}-{wildcards.method}-s{wildcards.seed} --set run.threads={threads} "
        "--set run.progress=false {params.gpus} {params.hub} --out {params.out} {params.replace} --wait-lock "
        "--allow-diverged > {log} 2>&1"


# The step size a tuned method reports with: its grid's best run on the dev split (hiso.scan.choose_lr).
rule choose_lr:
    input:
        metrics=lambda w: [f"{OUT}/runs/{w.exp}/{m}/seed{TUNING_SEED}/metrics.csv"
                           for m in EXPERIMENTS[w.exp]["choices"][w.method]],
    output:
        f"{OUT}/tuning/{{exp}}/{{method}}.json",
    conda:
        ENV
    log:
        f"{OUT}/logs/tuning/{{exp}}/{{method}}.log",
    params:
        py=PY,
        metric=lambda w: EXPERIMENTS[w.exp]["metric"],
        target=lambda w: EXPERIMENTS[w.exp]["target"],
    shell:
        "{params.py} -m hiso choose-lr --metrics {input.metrics} --metric {params.metric} --target {params.target} "
        "--out {output} > {log} 2>&1"


# The same choice for a `scan` method: one job runs the method's tuning runs while scanning (hiso/scan.py), so
# it is compute, submitted like a run job on a cluster; it writes the file choose_lr would.
ruleorder: scan_lr > choose_lr


rule scan_lr:
    input:
        base=lambda w: EXPERIMENTS[scan_of(w.scan)[0]]["base"],
    output:
        f"{OUT}/tuning/{{scan}}.json",
    wildcard_constraints:
        scan=SCAN_PATTERN,  # "<exp>/<method>" of every scanned method of the tier
    conda:
        ENV
    log:
        f"{OUT}/logs/tuning/{{scan}}.log",
    threads: lambda w: EXPERIMENTS[scan_of(w.scan)[0]].get("threads", 1)
    priority: lambda w: EXPERIMENTS[scan_of(w.scan)[0]].get("priority", 0) + 1  # it gates the method's runs
    resources:
        gpu=lambda w: EXPERIMENTS[scan_of(w.scan)[0]].get("gpu", 0),
        mem_mb=lambda w, attempt: resource(scan_of(w.scan)[0], "mem_mb", 4000),
        runtime=lambda w, attempt: 4 * resource(scan_of(w.scan)[0], "runtime", 60),
    params:
        py=PY,
        cmd=lambda w, threads: scan_command(*scan_of(w.scan), threads),
    shell:
        "{params.py} -m hiso {params.cmd} --out {output} > {log} 2>&1"


# A rehearsal's hub mirror: random models of each hub model's architecture and small data sets in each hub data
# set's schema (hiso/tasks/fixtures.py), so the tier's whole DAG runs on CPU without internet.
rule fixtures:
    output:
        f"{OUT}/fixtures/hub-lock.json",
    conda:
        ENV
    log:
        f"{OUT}/logs/fixtures.log",
    params:
        py=PY,
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{params.py} -m hiso fixtures --to {params.out} > {log} 2>&1"
