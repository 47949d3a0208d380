# The curvature study as a tier (workflows/config/curvature.yaml; the jobs are bench/curvature_study.py):
# one tuning scan per problem x method, one evaluation per problem x method x protocol x seed, one report.
# Like run jobs, study jobs are not rerun when the code changes (each row records what it measured); rerun one
# by deleting its output, or the tier with --forceall.  A tuning job killed mid-scan resumes after its last
# measured point (bench.curvature_study.Points: <csv>.partial.jsonl beside its outputs).
rule study_tune:
    output:
        csv=f"{STUDY_OUT}/tuning/{{problem}}/{{method}}.csv",
        json=f"{STUDY_OUT}/tuning/{{problem}}/{{method}}.json",
    conda:
        ENV
    log:
        f"{OUT}/logs/study/tuning/{{problem}}/{{method}}.log",
    params:
        py=PY,
        problem=lambda w: shlex.quote(json.dumps(STUDY_PROBLEMS[w.problem])),
        method=lambda w: shlex.quote(study_method(w.method)),
        quick="--quick" if config.get("study_quick") else "",
        seed=TUNING_SEED,
    shell:
        "{params.py} -m bench.curvature_study tune --problem {params.problem} --method {params.method} "
        "--seed {params.seed} {params.quick} --csv {output.csv} --json {output.json} > {log} 2>&1"


# "tuned" runs at the method's own choice, "equal-lr" at the reference's (DeComFL's), "rounding" is a tuned run's
# rounding twin (the study's `rounding:` seeds; its initial model one ulp away)
rule study_eval:
    input:
        choice=lambda w: f"{STUDY_OUT}/tuning/{w.problem}/"
        f"{config['study']['reference'] if w.protocol == 'equal-lr' else w.method}.json",
    output:
        f"{STUDY_OUT}/eval/{{problem}}/{{method}}/{{protocol}}-seed{{seed}}.csv",
    conda:
        ENV
    log:
        f"{OUT}/logs/study/eval/{{problem}}/{{method}}/{{protocol}}-seed{{seed}}.log",
    params:
        py=PY,
        problem=lambda w: shlex.quote(json.dumps(STUDY_PROBLEMS[w.problem])),
        method=lambda w: shlex.quote(study_method(w.method)),
    wildcard_constraints:
        protocol="tuned|equal-lr|rounding",
    shell:
        "{params.py} -m bench.curvature_study eval --problem {params.problem} --method {params.method} "
        "--protocol {wildcards.protocol} --seed {wildcards.seed} --lr-from {input.choice} --csv {output} > {log} 2>&1"


rule study_report:
    input:
        tuning=lambda w: study_tuning_files("csv"),
        eval=lambda w: study_eval_files(),
        readings=lambda w: config["study"].get("readings", []),
        script="bench/curvature_study.py",
        report="bench/curvature_report.py",
        figure_script="figures/curvature_agreement.py",
        code=code_of("bench/curvature_report.py") + code_of("figures/curvature_agreement.py"),
    output:
        md=f"{OUT}/pages/curvature.md",
        folder=directory(f"{OUT}/pages/curvature"),
    conda:
        ENV
    log:
        f"{OUT}/logs/pages/curvature.log",
    params:
        py=PY,
        study=lambda w: shlex.quote(json.dumps(config["study"])),
        readings=lambda w, input: f"--readings {input.readings}" if input.readings else "",
        command=lambda w: shlex.quote(page_command(("only", "study_methods", "study_quick"))),
        # the agreement figure's estimators (study.learned), by label, those of the methods kept
        learned=lambda w: " ".join(shlex.quote(config["study"]["methods"][m]["label"])
                                   for m in STUDY.kept_methods(config, config["study"].get("learned", []))),
        commit=COMMIT,
        date=TODAY,
    shell:
        "{params.py} -m bench.curvature_study report --study {params.study} --tuning {input.tuning} "
        "--eval {input.eval} --csv-dir {output.folder} --md {output.md} --figure-rel curvature/agreement.png "
        "{params.readings} --command {params.command} --commit {params.commit} --date {params.date} > {log} 2>&1 && "
        "{params.py} -m figures.curvature_agreement --eval {output.folder}/eval.csv --methods {params.learned} "
        "--png {output.folder}/agreement.png --pdf {output.folder}/agreement.pdf >> {log} 2>&1"
