# The performance tier (workflows/config/perf.yaml; the parts run through bench/perf.py, the page bench/perf_report.py):
# one job per entry of perf.jobs and one report.  A local perf job takes every core so that no other job runs
# beside it: the parts set torch to one thread and time their ratios side by side, but a quiet machine keeps
# their noise down.  On a cluster a perf job is submitted like a run job, to measure the node it lands on.
# Like run jobs, perf jobs are not rerun when the code changes: delete a job's CSV and rerun with --forcerun
# perf_report to measure it again (a missing input of a finished report is not remade by itself).
rule perf_job:
    output:
        csv=f"{PERF_OUT}/{{job}}.csv",
        meta=f"{PERF_OUT}/{{job}}.json",
    threads: workflow.cores if workflow.local_exec else 1  # on a cluster: one core of the node it measures
    conda:
        ENV
    log:
        f"{OUT}/logs/perf/{{job}}.log",
    params:
        py=PY,
        args=lambda w: " ".join(
            f"--{k} {','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in PERF_JOBS[w.job].items() if k in ("models", "repeats", "P", "tier", "cores", "rounds"))
        + (f" --keep {PERF_OUT}/{PERF_JOBS[w.job]['keep']}" if "keep" in PERF_JOBS[w.job] else ""),
        part=lambda w: PERF_JOBS[w.job]["part"],
    wildcard_constraints:
        job="|".join(re.escape(j) for j in PERF_JOBS) or "(?!)",
    shell:
        "{params.py} -m bench.perf --only {params.part} {params.args} --csv {output.csv} --meta {output.meta} "
        "> {log} 2>&1"


rule perf_report:
    input:
        csv=lambda w: [f"{PERF_OUT}/{j}.csv" for j in PERF_JOBS],
        meta=lambda w: [f"{PERF_OUT}/{j}.json" for j in PERF_JOBS],
        readings=lambda w: config["perf"].get("readings", []),
        script="bench/perf_report.py",
        code=code_of("bench/perf_report.py"),
    output:
        md=f"{OUT}/pages/perf.md",
        folder=directory(f"{OUT}/pages/perf"),
    conda:
        ENV
    log:
        f"{OUT}/logs/pages/perf.log",
    params:
        py=PY,
        perf=lambda w: shlex.quote(json.dumps(config["perf"])),  # the page shows the jobs whose CSVs it has
        readings=lambda w, input: f"--readings {input.readings}" if input.readings else "",
        command=lambda w: shlex.quote(page_command()),
        commit=COMMIT,
        date=TODAY,
    shell:
        "mkdir -p {output.folder} && cp {input.csv} {input.meta} {output.folder}/ && "
        "{params.py} -m bench.perf_report --perf {params.perf} --folder {output.folder} --md {output.md} "
        "{params.readings} --command {params.command} --commit {params.commit} "
        "--date {params.date} > {log} 2>&1"
