"""Prompt data: the :class:`PromptSet`, resource tiers, PolyRefuse, the built-in sets and prompt files.

| module | owns |
|---|---|
| :mod:`~lowres_safety.data.prompts` | :class:`PromptSet`, sampling the same source ids in every language |
| :mod:`~lowres_safety.data.tiers` | the paper's resource tiers and tiers for other languages |
| :mod:`~lowres_safety.data.loaders` | PolyRefuse in its upstream layout, the built-in demo set |
| :mod:`~lowres_safety.data.prompt_files` | your own files: long or wide CSV/TSV/JSON/JSONL |
| :mod:`~lowres_safety.data.parallel` | checks that translations are row-parallel to English |
| :mod:`~lowres_safety.data.splits` | train, val and test prompts in one set, for the paper's analyses |
"""

from . import loaders, parallel, prompt_files, prompts, splits, tiers
from .loaders import BUILTIN_SETS, SPLITS, is_builtin, is_polyrefuse, load, load_builtin, load_polyrefuse, read_wide_resource
from .prompt_files import FileOptions, load_prompts, open_prompts
from .prompts import COLUMNS, SUBSETS, PromptSet, language_seed, sample_sources
from .splits import analysis_splits, has_analysis_splits
from .tiers import PAPER_TIERS, TIERS, check_tiers, current_tiers, extra_tiers, in_tier, tier, tier_of

__all__ = [
    "BUILTIN_SETS",
    "COLUMNS",
    "PAPER_TIERS",
    "SPLITS",
    "SUBSETS",
    "TIERS",
    "FileOptions",
    "analysis_splits",
    "PromptSet",
    "check_tiers",
    "current_tiers",
    "extra_tiers",
    "has_analysis_splits",
    "in_tier",
    "is_builtin",
    "is_polyrefuse",
    "language_seed",
    "load",
    "load_builtin",
    "load_polyrefuse",
    "load_prompts",
    "loaders",
    "open_prompts",
    "parallel",
    "prompt_files",
    "prompts",
    "read_wide_resource",
    "sample_sources",
    "splits",
    "tier",
    "tier_of",
    "tiers",
]
