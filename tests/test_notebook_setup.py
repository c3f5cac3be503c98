"""notebook_setup: figures that survive an offline HTML export, library deprecation noise hidden, the reader's kept."""

import warnings

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from lowres_safety import notebook_setup


@pytest.fixture
def restore_renderer():
    before = pio.renderers.default
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    yield
    pio.renderers.default = before
    hf_logging.set_verbosity(verbosity)


def test_figures_carry_html_next_to_the_plotly_mimetype(restore_renderer):
    pio.renderers.default = "plotly_mimetype"  # plotly's own default in a Jupyter kernel: no HTML to export
    assert "text/html" not in go.Figure(go.Bar(y=[1, 2]))._repr_mimebundle_()
    assert notebook_setup()["plotly_renderer"] == "plotly_mimetype+notebook"
    bundle = go.Figure(go.Bar(y=[1, 2]))._repr_mimebundle_()
    assert {"application/vnd.plotly.v1+json", "text/html"} <= set(bundle)
    assert "Plotly.newPlot" in bundle["text/html"]


def test_library_deprecations_are_hidden_and_the_readers_warnings_kept(restore_renderer):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        notebook_setup()
        warnings.warn_explicit("old peft API", FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
        warnings.warn_explicit("old torch API", DeprecationWarning, "x.py", 1, module="torch.nn.modules")
        warnings.warn_explicit("your call", FutureWarning, "cell.py", 1, module="__main__")
        warnings.warn_explicit("a real problem", UserWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
    assert [str(w.message) for w in seen] == ["your call", "a real problem"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        notebook_setup(quiet_libraries=False)
        warnings.warn_explicit("old peft API", FutureWarning, "m.py", 1, module="transformers.modeling_utils")
    assert len(seen) == 1


@pytest.mark.slow
def test_an_executed_notebook_and_its_html_export_show_the_figure_offline(tmp_path):
    """Execute a notebook as a reader would, export it to HTML, and find the figure and plotly.js (once) in it."""
    nbconvert = pytest.importorskip("nbconvert")
    from nbclient import NotebookClient

    cells = ["import lowres_safety as ls\nls.notebook_setup()",
             "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['sw', 'yo'], y=[41.5, 17.25]))",
             "go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))",
             "from tqdm.auto import tqdm\nfor _ in tqdm(range(20)):\n    pass"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]  # no red text
    library = [o for o in outputs if "text/html" in o.get("data", {}) and len(o["data"]["text/html"]) > 1_000_000]
    assert len(library) == 1  # plotly.js inline once per notebook
    page, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    from plotly.offline import get_plotlyjs

    banner = get_plotlyjs()[:40]  # "/**\n* plotly.js v4.1.1\n* Copyright ..."
    assert page.count(banner) == 1
    assert "41.5" in page and "17.25" in page and page.count("Plotly.newPlot") >= 2


def test_a_claim_prints_its_verdict_and_raises_only_under_the_assert_flag(capsys, monkeypatch):
    """Catches: a notebook claim that stays a printout when the tests run the notebooks (the flag is set), or one
    that stops a reader's notebook (the flag unset)."""
    from lowres_safety import claim

    monkeypatch.delenv("LOWRES_NB_ASSERT", raising=False)
    assert claim("two is even", 2 % 2 == 0) is True
    assert claim("three is even", 3 % 2 == 0, detail="3 % 2 = 1") is False
    out = capsys.readouterr().out
    assert "✓ two is even" in out and "✗ three is even\n3 % 2 = 1" in out
    monkeypatch.setenv("LOWRES_NB_ASSERT", "1")
    assert claim("two is even", True)
    with pytest.raises(AssertionError, match="three is even"):
        claim("three is even", False)
    monkeypatch.setenv("LOWRES_NB_ASSERT", "0")
    assert claim("three is even", False) is False
