"""README.md stays short, current and in step with the committed results (issue 24)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _tables_module():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_match_the_results_files():
    """Every marked table equals what scripts/readme_tables.py renders from results/*.json (CI fails on drift)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr + "\nrun: python scripts/readme_tables.py"
    text = README.read_text()
    for name in ("quickstart", "quickstart-samples", "roc45k", "evaluation", "ablations"):
        assert f"<!-- table:{name} -->" in text and f"<!-- /table:{name} -->" in text


def test_readme_is_short_and_has_no_stale_pointers():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert len(text.encode()) <= 20 * 1024
    assert "planned next" not in text.lower()
    assert "../shared" not in text  # a user of the repository does not have that folder
    assert "<!-- hub-api -->" in text


def test_readme_links_resolve():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_equation_map_points_at_defined_names():
    """Each `path.py:Name` of the equation -> code map names a class, function or constant defined in that file."""
    section = README.read_text().split("## Where the papers' equations live", 1)[1].split("\n## ", 1)[0]
    pointers = re.findall(r"`([\w/]+\.py):(\w+)`", section)
    assert len(pointers) >= 20
    for path, name in pointers:
        source = (ROOT / "src" / "ldlm" / path).read_text()
        assert re.search(rf"^\s*(class|def) {name}\b|^{name}\s*[:=]", source, re.M), f"{path}:{name}"


def test_roc45k_table_renders_the_file_or_says_it_is_missing(tmp_path):
    tables = _tables_module()
    assert "not measured yet" in tables.roc45k(tmp_path)
    stat = {"mean": 1.5, "std": 0.25}
    row = {"judge_ppl": {"mean": 123.45, "std": 6.7}, "entropy": stat, "mauve": stat, "div": stat}
    rows = {"cosmos": {**row, "train_minutes": 181.0}, "ar": {**row, "train_minutes": 75.4}, "reference": row}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "roc45k.json").write_text(
        json.dumps(
            {"rows": rows, "commands": ["ldlm train ar_roc45k"], "protocol": {"num_samples": 128, "seeds": [0, 1, 2]}}
        )
    )
    table = tables.roc45k(tmp_path)
    assert "| COSMOS (`cosmos_roc45k`) | 123.5 ± 6.7 | 1.50 ± 0.25 | 1.500 ± 0.250 | 1.500 ± 0.250 | 181 |" in table
    assert "| real held-out | 123.5 ± 6.7 | 1.50 ± 0.25 | 1.500 ± 0.250 | 1.500 ± 0.250 | – |" in table
    assert "128 samples × 3 seeds" in table and "```bash\nldlm train ar_roc45k\n```" in table


def test_render_is_idempotent_and_check_flags_drift(tmp_path):
    tables = _tables_module()
    text = README.read_text()
    assert tables.render(text) == text
    drifted = text.replace("<!-- /table:quickstart -->", "| made-up | 1 |\n<!-- /table:quickstart -->", 1)
    readme = tmp_path / "README.md"
    readme.write_text(drifted)
    assert tables.main(["--check", "--readme", str(readme)]) == 1
    assert tables.main(["--readme", str(readme)]) == 0 and readme.read_text() == text


def test_docs_links_resolve_and_architecture_names_existing_modules():
    pages = (
        "architecture",
        "quickstart",
        "evaluation",
        "seq2seq",
        "performance",
        "scaling",
        "configuration",
        "reproduction",
    )
    for page in pages:
        path = ROOT / "docs" / f"{page}.md"
        text = path.read_text()
        assert "**Summary.**" in text.split("\n## ", 1)[0], f"{page}.md starts with a short summary"
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if not target.startswith("http"):
                assert (path.parent / target).exists(), f"{page}.md links {target}"
    modules = set(re.findall(r"\b((?:[a-z_]+/)*[a-z_]+\.py)\b", (ROOT / "docs" / "architecture.md").read_text()))
    assert len(modules) >= 20
    for module in modules:
        assert (ROOT / "src" / "ldlm" / module).is_file() or (ROOT / module).is_file(), f"architecture.md: {module}"


def test_fewstep_table_renders_the_recommendation_beside_euler_200(tmp_path):
    tables = _tables_module()
    assert "not measured yet" in tables.fewstep(tmp_path)
    stat = lambda m: {"mean": m, "std": 1.0}  # noqa: E731
    rows = [
        {"sampler": "euler", "steps": 200, "seconds_per_sample": 0.4, "judge_ppl": stat(100.0), "mauve": stat(0.5)},
        {"sampler": "ddim", "steps": 16, "seconds_per_sample": 0.05, "judge_ppl": stat(101.0), "mauve": stat(0.49)},
    ]
    fewstep = {"models": {"m": {"rows": rows}}, "recommended": {"m": {"sampler": "ddim", "steps": 16}}, "rule": "r"}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "fewstep.json").write_text(json.dumps(fewstep))
    table = tables.fewstep(tmp_path)
    assert "| `m` | ddim, 16 calls | 101.0 ± 1.0 | 100.0 ± 1.0 | 0.490 ± 1.000 | 0.500 ± 1.000 | 8.0× |" in table
