# One federated run per (experiment, method, seed), through the same CLI a user would type.
rule run:
    input:
        base=lambda w: EXPERIMENTS[w.exp]["base"],
    output:
        f"{OUT}/runs/{{exp}}/{{method}}/seed{{seed}}/metrics.csv",
    conda:
        "../envs/hiso.yaml"
    log:
        f"{OUT}/logs/{{exp}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/{{exp}}/{{method}}/seed{{seed}}.tsv"
    threads: lambda w: EXPERIMENTS[w.exp].get("threads", 1)
    priority: lambda w: EXPERIMENTS[w.exp].get("priority", 0)
    resources:
        gpu=lambda w: EXPERIMENTS[w.exp].get("gpu", 0),
    params:
        py=PY,
        sets=lambda w: set_args(w.exp, w.method, w.seed),
        out=lambda w: f"{OUT}/runs/{w.exp}/{w.method}/seed{w.seed}",
    shell:
        "{params.py} -m hiso run --config {input.base} {params.sets} --set seed={wildcards.seed} "
        "--set name={wildcards.exp}-{wildcards.method}-s{wildcards.seed} --set run.threads={threads} "
        "--set run.progress=false --out {params.out} --replace-different --allow-diverged > {log} 2>&1"
