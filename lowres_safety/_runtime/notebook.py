"""One call at the top of a notebook so that what a reader sees is the analysis, not the machinery.

A notebook is read twice: live in Jupyter, and as an executed copy or an HTML export
passed around offline. :func:`notebook_setup` makes both show the same thing:

- **figures** render through ``plotly_mimetype+notebook``: JupyterLab and VS Code draw the
  plotly mimetype, and the HTML part carries plotly.js inline once per notebook (in the
  cell of the first figure), so an executed notebook and its ``jupyter nbconvert --to
  html`` export show every figure with no internet. Plotly's own default in a Jupyter
  kernel is the mimetype alone, which an HTML export drops: the figures vanish.
- **progress bars** are ``tqdm.auto`` widgets, which need ``ipywidgets`` in the kernel
  (``pip install "lowres-safety[notebooks]"``); without it tqdm falls back to text bars
  that repaint as many stderr lines, and this function says what to install.
- **claims**: where a notebook's text says what the figures show, :func:`claim` prints
  whether it holds on this run, and with ``LOWRES_NB_ASSERT=1`` (as the tests run the
  notebooks) a claim that does not hold stops the notebook.
- **library warnings** that are not the reader's business (deprecation notices that
  ``transformers``, ``peft`` or ``transformer_lens`` raise about each other's APIs) are
  filtered; warnings raised about the reader's own calls are kept.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

__all__ = ["ASSERT_CLAIMS", "LIBRARIES", "PLOTLY_RENDERER", "claim", "notebook_setup"]

#: Environment variable that turns a claim that does not hold into an AssertionError.
ASSERT_CLAIMS = "LOWRES_NB_ASSERT"

#: Plotly renderer that works live (mimetype) and in an offline HTML export (HTML with plotly.js inline once).
PLOTLY_RENDERER = "plotly_mimetype+notebook"
#: Libraries whose deprecation warnings about their own internals are hidden.
LIBRARIES = ("transformers", "peft", "transformer_lens", "accelerate", "huggingface_hub", "torch", "gguf")


def notebook_setup(*, renderer: str = PLOTLY_RENDERER, quiet_libraries: bool = True) -> dict[str, str]:
    """Figures that survive an HTML export, widget progress bars, and no library noise; returns what it set.

    Safe to call more than once. ``quiet_libraries=False`` leaves every warning visible
    (e.g. when upgrading a dependency).
    """
    import plotly.io as pio

    pio.renderers.default = renderer
    if quiet_libraries:
        for library in LIBRARIES:
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # info and warning logs (e.g. generation config notes) go to stderr
    widgets = importlib.util.find_spec("ipywidgets") is not None
    if not widgets:
        print('Progress bars will print as text: pip install "lowres-safety[notebooks]" (ipywidgets) and restart '
              "the kernel for widget bars.")
    return {"plotly_renderer": renderer, "progress_bars": "widgets" if widgets else "text",
            "library_warnings": "hidden" if quiet_libraries else "shown"}


def claim(statement: str, holds, detail=None) -> bool:
    """Print ✓ or ✗ before a notebook's written claim; under ``LOWRES_NB_ASSERT=1`` a ✗ raises AssertionError.

    ``detail`` (e.g. the table the claim reads) is shown when the claim does not hold.
    """
    holds = bool(holds)
    shown = statement if holds or detail is None else f"{statement}\n{detail}"
    print(("✓ " if holds else "✗ ") + shown)
    if not holds and os.environ.get(ASSERT_CLAIMS, "") not in ("", "0"):
        raise AssertionError(shown)
    return holds
