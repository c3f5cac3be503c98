"""The faithfulness table (docs/faithfulness.md) says what each default is; this checks the code still agrees.

Each check names a row, the default as the row writes it, and reads the default from the
code. Changing a default without the table (or the table without the code) fails here.
"""

import inspect
from pathlib import Path

import pytest

from lowres_safety import hooks as H
from lowres_safety.gate import Gate
from lowres_safety.methods import AdaSteer, Cast
from lowres_safety.pipelines import SteerConfig

TABLE = (Path(__file__).resolve().parents[1] / "docs" / "faithfulness.md").read_text(encoding="utf-8")


def default(fn, name):
    return inspect.signature(fn).parameters[name].default


def row(name: str) -> str:
    found = [line for line in TABLE.splitlines() if line.startswith(f"| {name} |")]
    assert len(found) == 1, f"no single row {name!r} in docs/faithfulness.md"
    return found[0]


CHECKS = [
    ("gate readout", 'readout="paper"', lambda: default(Gate, "readout"), "paper"),
    ("recalibration", 'method="paper"', lambda: default(Gate.recalibrate, "method"), "paper"),
    ("routing", 'ablation="gate_layer"', lambda: default(H.route, "ablation"), "gate_layer"),
    ("AdaSteer", 'adapted_from="pooled"', lambda: default(AdaSteer.fit, "adapted_from"), "pooled"),
    ("CAST", 'adapted_from="pooled"', lambda: default(Cast.fit, "adapted_from"), "pooled"),
    ("CAST", 'behaviour_at="user_turn_end"', lambda: default(Cast.fit, "behaviour_at"), "user_turn_end"),
    ("CAST", "masked=False", lambda: default(Cast.fit, "masked"), False),
    ("judge", "max_new_tokens=24", lambda: SteerConfig().max_new_tokens, 24),
    ("judge", "substring", lambda: SteerConfig().judge, "substring"),
    ("utility", 'mc="builtin"', lambda: SteerConfig().mc, "builtin"),
    ("protocol (`steer`)", "n_fit=32", lambda: SteerConfig().n_fit, 32),
    ("protocol (`steer`)", "ks=(0, 1, 2, 4)", lambda: SteerConfig().ks, (0, 1, 2, 4)),
    ("protocol (`steer`)", "n_per_class=12", lambda: SteerConfig().n_per_class, 12),
    ("protocol (`steer`)", "n_fit=None", lambda: SteerConfig.paper().n_fit, None),
    ("protocol (`steer`)", "n_per_class=None", lambda: SteerConfig.paper().n_per_class, None),
    ("protocol (`steer`)", "ks=(0, 1, 2, 4, 8, 16, 32, 64)", lambda: SteerConfig.paper().ks, (0, 1, 2, 4, 8, 16, 32, 64)),
    ("protocol (`steer`)", "max_new_tokens=128", lambda: SteerConfig.paper().max_new_tokens, 128),
]


@pytest.mark.parametrize("name,written,read,expected", CHECKS, ids=[f"{c[0]}: {c[1]}" for c in CHECKS])
def test_the_table_names_each_default_the_code_has(name, written, read, expected):
    """Catches: a default changed in the code and not in the table, or the reverse."""
    assert f"`{written}`" in row(name)
    assert read() == expected


def test_every_row_cites_the_released_code():
    """Each row's released-code column names a file or says there is none."""
    rows = [line for line in TABLE.splitlines() if line.startswith("| ") and not line.startswith("| part")
            and not line.startswith("|---")]
    assert len(rows) >= 15
    for line in rows:
        released = line.split(" | ")[2]
        assert ".py" in released or released.startswith("none") or ".yaml" in released, line[:60]
