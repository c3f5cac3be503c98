"""Resource tiers: the paper's 23 languages in three tiers, and tiers for languages outside it.

:data:`TIERS` is the paper's table and never changes. Languages outside it get a tier
for the length of a block with :func:`extra_tiers` (the CLI's ``--tiers``, a config's
``tiers``): the extra entries live in a context variable, so nothing module-wide is
mutated and two runs in one process (or two threads) never see each other's tiers.
Every table the toolkit builds reads a language's tier through :func:`tier_of`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["PAPER_TIERS", "TIERS", "check_tiers", "current_tiers", "extra_tiers", "in_tier", "tier", "tier_of"]

#: The paper's 23 languages in three resource tiers (Aziz, Hanif, Koto 2026); read-only.
TIERS: Mapping[str, str] = MappingProxyType({
    **{lang: "high" for lang in "en de fr es it nl pl ru zh ja".split()},
    **{lang: "mid" for lang in "ar ko th el he hi fa".split()},
    **{lang: "low" for lang in "sw am my km si yo".split()},
})
PAPER_TIERS: Mapping[str, str] = TIERS  # the name the tier checks use: what extra tiers may not change
_EXTRA: ContextVar[Mapping[str, str]] = ContextVar("lowres_safety_extra_tiers", default=MappingProxyType({}))


def current_tiers() -> dict[str, str]:
    """The paper's table plus the tiers :func:`extra_tiers` set for the block this runs in."""
    return {**TIERS, **_EXTRA.get()}


def tier_of(language: str, tiers: Mapping[str, str] | None = None) -> str:
    """Resource tier of ``language`` (``"unlisted"`` if the table does not name it)."""
    if tiers:
        return tiers.get(language, "unlisted")
    return TIERS.get(language) or _EXTRA.get().get(language, "unlisted")


def check_tiers(tiers: Mapping[str, str]) -> None:
    """Tiers for languages outside the paper's table: a known tier each, none contradicting the paper."""
    known = set(TIERS.values())
    for lang, name in tiers.items():
        if name not in known:
            raise ValueError(f"tier {name!r} for {lang!r} is not one of {sorted(known)}; write e.g. vi=mid")
        if PAPER_TIERS.get(lang, name) != name:
            raise ValueError(f"{lang!r} is {PAPER_TIERS[lang]!r} in the paper's table; --tiers sets languages "
                             "outside it")


def tier(name: str, tiers: Mapping[str, str] | None = None) -> list[str]:
    """Languages of one tier (``"high"``, ``"mid"``, ``"low"``), in table order."""
    table = tiers or current_tiers()
    if name not in set(table.values()):
        raise ValueError(f"unknown tier {name!r}; the table has {sorted(set(table.values()))}")
    return [lang for lang, t in table.items() if t == name]


@contextmanager
def extra_tiers(tiers: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Tiers for languages outside the paper's table while the block runs; yields the table in force.

    A language already in the paper's table keeps its tier (naming another one is an error).
    """
    check_tiers(tiers)
    added = {lang: name for lang, name in tiers.items() if lang not in TIERS}
    token = _EXTRA.set(MappingProxyType({**_EXTRA.get(), **added}))
    try:
        yield current_tiers()
    finally:
        _EXTRA.reset(token)


def in_tier(languages, name: str = "high", tiers: Mapping[str, str] | None = None) -> list[str]:
    """The languages of ``languages`` in tier ``name``, in their order (e.g. the high-resource source languages)."""
    tier(name, tiers)  # an unknown tier is an error, not an empty list
    return [lang for lang in languages if tier_of(lang, tiers) == name]
