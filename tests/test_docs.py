"""The documents stand alone and cannot drift: the README is a front door, the configuration page is what its
generator writes, and no document speaks of who ran what."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hiso.configdoc import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_front_door():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    for link in re.findall(r"\]\(([^)#]+\.md)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / link).exists(), link


def test_every_doc_link_resolves():
    for page in (ROOT / "docs").rglob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.relative_to(ROOT)} links to {link}"


REGENERATE = ".venv/bin/python -m hiso.configdoc --out docs/configuration.md --methods docs/running.md"


def test_configuration_page_and_methods_table_are_generated():
    """Both pages are what hiso.configdoc writes for the methods they document; a method registered since (a
    user's new baseline) only warns, so adding one takes no edit of the docs."""
    import warnings

    from hiso.configdoc import documented_methods, with_methods_table
    from hiso.registry import methods
    page = (ROOT / "docs" / "configuration.md").read_text()
    documented = documented_methods(page.split("## `method` and `method_options`")[1])
    missing = documented - set(methods())
    assert not missing, f"docs list methods that are not registered: {sorted(missing)}; {REGENERATE}"
    new = set(methods()) - documented
    if new:
        warnings.warn(f"methods {sorted(new)} are not in docs/configuration.md yet: {REGENERATE}", stacklevel=1)
    assert page == render(documented), f"docs/configuration.md is stale: {REGENERATE}"
    running = (ROOT / "docs" / "running.md").read_text()
    assert running == with_methods_table(running, documented), f"docs/running.md's methods table is stale: {REGENERATE}"


def test_a_newly_registered_method_warns_instead_of_failing_the_docs_test():
    from hiso.methods import METHODS, register_method
    register_method("zz_user_method", lambda cfg, task, opts: None, doc="a user's method")
    try:
        with pytest.warns(UserWarning, match="zz_user_method"):
            test_configuration_page_and_methods_table_are_generated()
    finally:
        METHODS.pop("zz_user_method")


def test_documents_speak_of_the_project_only():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    pattern = re.compile(r"session [0-9]|issue [0-9]|issue-[0-9]|was lent|this task", re.I)
    hits = [f for f in tracked if f.endswith((".md", ".py", ".yaml", ".smk", ".rst", ".toml"))
            and f != "tests/test_docs.py" and pattern.search((ROOT / f).read_text(errors="ignore"))]
    assert not hits, hits


def test_ruff_is_clean():
    import shutil
    import sys
    ruff = Path(sys.executable).parent / "ruff"
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert exe, "ruff is in the test extra (pip install -e '.[test]')"
    p = subprocess.run([exe, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:]


def test_committed_results_pages_are_what_their_rule_writes(tmp_path):
    """Each docs/results/<page>.md is re-rendered from its committed tables (docs/results/<page>/tables) with the
    command, commit and date of its header: any hand edit, or a number that no longer matches, fails."""
    script = ROOT / "workflows" / "scripts" / "results_page.py"
    pages = [p for p in (ROOT / "docs" / "results").glob("*.md") if (p.parent / p.stem / "tables").is_dir()]
    for page in pages:
        text = page.read_text()
        head = re.search(r"^# (.*)\n\nWritten by the workflow \(`(.*)`\) at commit (\S+) on (\S+);", text, re.M)
        exps = re.findall(r"^## (?!Sweep: )(\S+)\n", text, re.M)
        sweeps = re.findall(r"^## Sweep: (\S+)\n", text, re.M)
        readings = page.parent / f"{page.stem}.readings.md"
        out = tmp_path / f"{page.stem}.md"
        cmd = [sys.executable, str(script), "--title", head.group(1), "--tables", str(page.parent / page.stem / "tables"),
               "--figures-rel", f"{page.stem}/figures", "--experiments", *exps, "--sweeps", *sweeps,
               "--command", head.group(2), "--commit", head.group(3), "--date", head.group(4), "--md", str(out)]
        if readings.exists():
            cmd += ["--readings", str(readings)]
        sensitivity = [e for e in exps if (page.parent / page.stem / "figures" / f"sensitivity_{e}.png").exists()]
        if sensitivity:  # experiments whose step sizes were scanned on a grid (the lm tier's)
            cmd += ["--sensitivity", *sensitivity]
        sliced = re.search(r"methods=\[([^]]*)\]", head.group(2))  # a page of some methods names its slice
        if sliced:
            cmd += ["--methods", *sliced.group(1).split(",")]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        assert out.read_text() == text, f"{page.relative_to(ROOT)} differs from what its rule writes"
        for fig in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
            assert (page.parent / fig).exists(), fig


def test_every_set_up_installs_the_one_offline_package_list():
    """make setup, the conda recipe and the workflow's conda env name requirements-offline.txt (not copies of its
    pins), and this environment has exactly those versions."""
    from importlib.metadata import version
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements-offline.txt").read_text().splitlines()]
    pins = [p for p in pins if p]
    assert len(pins) == 3
    for where in ("Makefile", "environment.yml", "workflows/envs/hiso.post-deploy.sh"):
        text = (ROOT / where).read_text()
        assert re.search(r"--no-deps -r requirements-offline\.txt", text), where
        assert not any(p in text for p in pins), f"{where} repeats a pin"
    for pin in pins:
        name, want = pin.split("==")
        assert version(name) == want, pin


def test_committed_curvature_page_is_what_its_report_writes():
    """docs/results/curvature.md re-rendered from its committed CSVs, readings and tier config (header values
    read from the page): a hand edit, or a number that no longer matches, fails."""
    import yaml

    from bench.curvature_report import page
    text = (ROOT / "docs" / "results" / "curvature.md").read_text()
    head = re.search(r"^Written by the workflow \(`(.*)`\) at commit (\S+) on (\S+);", text, re.M)
    study = yaml.safe_load((ROOT / "workflows" / "config" / "curvature.yaml").read_text())["study"]
    readings = (ROOT / study["readings"]).read_text()
    again = page(study, ROOT / "docs" / "results" / "curvature", "curvature/agreement.png", head.group(1),
                 head.group(2), head.group(3), readings)
    assert again == text


def test_committed_perf_page_is_what_its_report_writes():
    """docs/results/perf.md re-rendered from its committed CSVs and JSONs, readings and tier config."""
    import yaml

    from bench.perf_report import page
    text = (ROOT / "docs" / "results" / "perf.md").read_text()
    head = re.search(r"^Written by the workflow \(`(.*)`\) at commit (\S+) on (\S+);", text, re.M)
    perf = yaml.safe_load((ROOT / "workflows" / "config" / "perf.yaml").read_text())["perf"]
    again = page(perf, ROOT / "docs" / "results" / "perf", head.group(1), head.group(2), head.group(3),
                 (ROOT / perf["readings"]).read_text())
    assert again == text


def test_readme_headline_table_is_generated_from_its_table():
    p = subprocess.run([sys.executable, "workflows/scripts/readme_headline.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_readme_headline_names_the_spread_a_difference_stays_within():
    """An interval that excludes 0 beside "not distinguishable" reads as a contradiction: the headline says which
    spread the difference stays within, and keeps the bare verdict otherwise."""
    from conftest import workflow_script

    from hiso.noise import verdict
    headline = workflow_script("readme_headline")
    ci = {"n": 10, "mean": -0.01, "lo": -0.015, "hi": -0.004}
    assert headline.short_verdict(verdict(ci, 0.013, 0.001, higher=False)) == "within seed spread"
    assert headline.short_verdict(verdict(ci, 0.005, 0.02, higher=False)) == "within rounding spread"
    assert headline.short_verdict(verdict(ci, 0.005, 0.001, higher=False)) == "better"
    assert headline.short_verdict(verdict({**ci, "hi": 0.002}, 0.005, 0.001, higher=False)) == "not distinguishable"
