"""The docs: the site builds offline with warnings as errors, renders in a browser, and every import shown works."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import rendered_dom

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(from\s+lowres_safety[\w.]*\s+import\s+.+|import\s+lowres_safety[\w.]*(\s+as\s+\w+)?)\s*$")


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def _sources() -> dict[str, str]:
    """Python code a reader copies: the README's and the docs' code blocks, the notebooks' code cells."""
    out = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, block in enumerate(_code_blocks(path.read_text(encoding="utf-8"))):
            out[f"{path.relative_to(ROOT)}[{i}]"] = block
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
            out[f"{path.relative_to(ROOT)}[{i}]"] = "".join(cell["source"])
    return out


def _import_statements(code: str) -> list[str]:
    """Every import of lowres_safety in ``code`` (multi-line ones too), as source text."""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a block with ``...`` placeholders: read it line by line
        return [m.group(1) for line in code.splitlines() if (m := IMPORT.match(line))]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lowres_safety"):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Import) and any(a.name.startswith("lowres_safety") for a in node.names):
            found.append(ast.unparse(node))
    return found


def test_every_import_in_the_readme_the_docs_and_the_notebooks_resolves(recwarn):
    statements = {(where, s) for where, code in _sources().items() for s in _import_statements(code)}
    assert len({s for _, s in statements}) >= 10  # the readers' code does import the package
    for _, statement in sorted(statements):
        exec(statement, {})  # noqa: S102 - our own docs' import lines
    old = [str(w.message) for w in recwarn if "has moved to" in str(w.message)]
    assert not old, f"the docs use old addresses: {old}"


def test_an_import_line_that_does_not_resolve_is_caught():
    with pytest.raises(ImportError):
        for statement in _import_statements("from lowres_safety.steering import fit_methods\n"):
            exec(statement, {})


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_the_docs_build_offline_with_warnings_as_errors(site):
    assert (site / "index.html").is_file() and (site / "reference" / "representation" / "index.html").is_file()
    page = (site / "guides" / "diagnose" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', page)  # no CDN: it opens offline


def test_a_guide_page_renders_with_its_content(site):
    dom = rendered_dom(site / "guides" / "diagnose" / "index.html")
    assert "Diagnose: where does a language" in dom
    assert "Is the representation there?" in dom and "DiagnoseConfig" in dom


def test_an_api_page_renders_the_docstrings(site):
    dom = rendered_dom(site / "reference" / "representation" / "index.html")
    assert "lowres_safety.probing.separability" in dom
    assert "Per-layer separability of harmful vs harmless prompts" in dom  # the module docstring
    assert "choose_layer" in dom and "ActivationSet" in dom


def test_ci_runs_both_of_the_readmes_test_commands():
    """Catches: a README test command that CI does not run (the full run is what checks the diagnosis against
    each organism's construction), or a CI that runs something the README does not tell a user to run."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    fences = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for block in fences for line in block.splitlines() if "pytest" in line]
    assert len(ci) == 2 and [c.strip() for c in ci] == commands
    assert commands[1].endswith('python -m pytest -m "slow or not slow"')
