"""Resource tiers: the paper's 23 languages in three tiers, and tiers for languages outside it.

A :class:`~lowres_safety.data.PromptSet` reads a language's tier through :func:`tier_of`;
:func:`extra_tiers` adds languages for the length of a block (the CLI's ``--tiers``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

__all__ = ["PAPER_TIERS", "TIERS", "extra_tiers", "tier", "tier_of"]

#: The paper's 23 languages in three resource tiers (Aziz, Hanif, Koto 2026).
TIERS: dict[str, str] = {
    **{lang: "high" for lang in "en de fr es it nl pl ru zh ja".split()},
    **{lang: "mid" for lang in "ar ko th el he hi fa".split()},
    **{lang: "low" for lang in "sw am my km si yo".split()},
}
PAPER_TIERS: Mapping[str, str] = MappingProxyType(dict(TIERS))  # read-only: what --tiers may not change


def tier_of(language: str, tiers: Mapping[str, str] | None = None) -> str:
    """Resource tier of ``language`` (``"unlisted"`` if the table does not name it)."""
    return (tiers or TIERS).get(language, "unlisted")


def tier(name: str, tiers: Mapping[str, str] | None = None) -> list[str]:
    """Languages of one tier (``"high"``, ``"mid"``, ``"low"``), in table order."""
    table = tiers or TIERS
    if name not in set(table.values()):
        raise ValueError(f"unknown tier {name!r}; the table has {sorted(set(table.values()))}")
    return [lang for lang, t in table.items() if t == name]


@contextmanager
def extra_tiers(tiers: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Tiers for languages outside the paper's table while the block runs (the CLI's ``--tiers``).

    Every module reads :data:`TIERS` through :func:`tier_of`; this adds entries for the
    block and removes them afterwards, so a run never leaves the table changed. A
    language already in the table keeps its tier (naming another one is an error).
    """
    known = set(TIERS.values())
    for lang, name in tiers.items():
        if name not in known:
            raise ValueError(f"tier {name!r} for {lang!r} is not one of {sorted(known)}; write e.g. vi=mid")
        if PAPER_TIERS.get(lang, name) != name:
            raise ValueError(f"{lang!r} is {PAPER_TIERS[lang]!r} in the paper's table; --tiers sets languages "
                             "outside it")
    added = {lang: name for lang, name in tiers.items() if lang not in TIERS}
    TIERS.update(added)
    try:
        yield dict(TIERS)
    finally:
        for lang in added:
            TIERS.pop(lang, None)
