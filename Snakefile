# hiso-bench workflow: configs -> runs -> tables -> figures.  `snakemake --cores all` runs the embedded
# CPU default; `--configfile workflows/config/<tier>.yaml` picks another tier.
from pathlib import Path

if not workflow.overwrite_configfiles:  # `--configfile` picks a tier; without one, the embedded CPU default
    configfile: "workflows/config/default.yaml"  # (`--config key=value` still applies on top of it)

report: "workflows/report/workflow.rst"


include: "workflows/rules/common.smk"
include: "workflows/rules/run.smk"
include: "workflows/rules/tables.smk"
include: "workflows/rules/figures.smk"
include: "workflows/rules/pages.smk"
include: "workflows/rules/study.smk"
include: "workflows/rules/perf.smk"

# Tables, figures, the step-size choice and the small zeta run take seconds: on a cluster they run where snakemake runs.
localrules: all, table, paper_side_by_side, paper_claims, convergence_figure, sweep_figure, sensitivity_figure, curvature_histogram, zeta_run, zeta_figure, choose_lr, fixtures, results_page, study_report, perf_report


# Local jobs fork from one warm process that imported torch, transformers and the suite once (hiso/warm.py): a
# tier of many small runs pays its imports once. Outputs are identical to cold runs; `--config
# warm_runner=False` turns it off, and cluster executors never use it.
if config.get("warm_runner", True) and workflow.local_exec and not CONDA:
    from hiso.warm import WorkflowServer

    WARM = WorkflowServer()

    onstart:
        WARM.start()

    onsuccess:
        WARM.stop()

    onerror:
        WARM.stop()


rule all:
    input:
        all_tables(),
        all_figures(),
        all_pages(),
        all_study(),
        all_perf(),
