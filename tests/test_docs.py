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
    command, commit and date of its header (workflows/scripts/rerender_pages.py): any hand edit, or a number that
    no longer matches, fails."""
    sys.path.insert(0, str(ROOT / "workflows" / "scripts"))
    import rerender_pages
    pages = rerender_pages.pages()
    assert {p.stem for p in pages} >= {"default", "ablations", "lm", "curvature", "perf"}
    for page in pages:
        text = page.read_text()
        assert rerender_pages.render(page, tmp_path / page.name) == text, \
            f"{page.relative_to(ROOT)} differs from what its rule writes: workflows/scripts/rerender_pages.py {page}"
        for fig in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
            assert (page.parent / fig).exists(), fig


def test_rerender_pages_finds_and_mends_a_hand_edit(tmp_path):
    """The re-render command names a hand-edited page (--check exits 1), puts the rule's text back, and refuses a
    page that is not built from tables (exit 2)."""
    import shutil
    sys.path.insert(0, str(ROOT / "workflows" / "scripts"))
    import rerender_pages
    src = ROOT / "docs" / "results"
    shutil.copytree(src / "default", tmp_path / "default")
    for name in ("default.md", "default.readings.md"):
        if (src / name).exists():
            shutil.copyfile(src / name, tmp_path / name)
    page = tmp_path / "default.md"
    good = page.read_text()
    assert rerender_pages.main(["--check", str(page)]) == 0
    page.write_text(good.replace("## digits\n", "## digits\n\nA sentence no rule wrote.\n", 1))
    assert rerender_pages.main(["--check", str(page)]) == 1
    assert rerender_pages.main([str(page)]) == 0
    assert page.read_text() == good
    (tmp_path / "loose.md").write_text("# a page\n")
    assert rerender_pages.main([str(tmp_path / "loose.md")]) == 2
    # a report page (the curvature study's), re-rendered by its report from its CSVs and the config its header names
    (tmp_path / "curvature").mkdir()
    for name in ("eval.csv", "tuning.csv"):
        shutil.copyfile(src / "curvature" / name, tmp_path / "curvature" / name)
    page = tmp_path / "curvature.md"
    good = (src / "curvature.md").read_text()
    page.write_text(good.replace("**What this says.**", "**What this shows.**", 1))
    assert good != page.read_text() and rerender_pages.main(["--check", str(page)]) == 1
    assert rerender_pages.main([str(page)]) == 0 and page.read_text() == good


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
