"""A script lesion: the model cannot read one writing system, so its harmfulness signal there is absent.

The representation-failure organism needs a language whose harmfulness information is
missing *before* the layer the gate reads, on every prompt, seen or unseen. A LoRA trained
to pull a language's last-token projections together learns its training prompts, not the
language: the content of every other position is untouched, and later blocks read it
again (measured: README, "The model organisms"). A lesion removes the content itself.

:class:`ScriptLesion` names languages with a script of their own (Thai, Korean, ...). The
model's tokenizer gets one more normalization step: a message is read from the start of its
first line that holds a character of that script to its end as one placeholder letter of
the script (``ก`` for Thai). A Thai prompt then reaches the network as the same two tokens
whatever it asks and however long it is. Narrower lesions leak, measured on PolyRefuse val
at L* of the organism: replacing each token of the script by one embedding leaves the
prompt's length (harmful prompts are longer in every language; AUROC 0.65–0.70), and
replacing only the stretch from the first to the last letter of the script leaves the
Latin terms the translations keep around it ("MDMA", "USB", "EternalBlue"; AUROC
0.68–0.76). Lines *before* the first one in the script, the chat template, and every other
language are untouched.

It lives in the tokenizer, so every path that encodes a prompt (extraction, generation,
grids, ``model.to_tokens``) sees the same lesioned ids; the network's weights are those of
the organism it is applied to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ._runtime.files import atomic_write_text

__all__ = ["SCRIPTS", "ScriptLesion"]

#: The scripts a lesion can name, by language: the letter every stretch of it is read as, and its Unicode
#: blocks (inclusive code point ranges).
SCRIPTS: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {
    "th": ("ก", ((0x0E00, 0x0E7F),)),
    "ko": ("가", ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF))),
    "ar": ("ا", ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))),
    "he": ("א", ((0x0590, 0x05FF),)),
    "el": ("α", ((0x0370, 0x03FF),)),
    "hi": ("अ", ((0x0900, 0x097F),)),
    "am": ("አ", ((0x1200, 0x139F),)),
    "my": ("က", ((0x1000, 0x109F),)),
    "km": ("ក", ((0x1780, 0x17FF),)),
    "si": ("අ", ((0x0D80, 0x0DFF),)),
}
LESION_FILE = "lesion.json"


def _char_class(ranges) -> str:
    return "[" + "".join(f"\\x{{{lo:04X}}}-\\x{{{hi:04X}}}" for lo, hi in ranges) + "]"


@dataclass(frozen=True)
class ScriptLesion:
    """Which scripts the model cannot read: a message in one is read as one letter of it (module docstring)."""

    languages: tuple[str, ...]

    def __post_init__(self):
        unknown = [lang for lang in self.languages if lang not in SCRIPTS]
        if unknown or not self.languages:
            raise ValueError(f"no script known for {unknown or 'an empty list'}; a lesion takes languages with "
                             f"a script of their own: {sorted(SCRIPTS)}")

    def placeholder(self, language: str) -> str:
        """What every stretch of ``language``'s script is read as: its script's first letter."""
        return SCRIPTS[language][0]

    def pattern(self, language: str) -> str:
        """What is replaced: from the start of the first line holding the script to the end of the message."""
        return f"[^\\n]*{_char_class(SCRIPTS[language][1])}[\\s\\S]*"

    def apply(self, tokenizer):
        """``tokenizer`` (a fast Hugging Face tokenizer, changed in place) with the lesion as a last normalizer."""
        from tokenizers import Regex, normalizers

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"a script lesion needs a fast tokenizer; {type(tokenizer).__name__} has no "
                             "backend_tokenizer")
        steps = [] if backend.normalizer is None else [backend.normalizer]
        steps += [normalizers.Replace(Regex(self.pattern(lang)), self.placeholder(lang)) for lang in self.languages]
        backend.normalizer = normalizers.Sequence(steps)
        return tokenizer

    def save(self, folder: str | Path, base: str | None = None) -> None:
        meta = {"languages": list(self.languages), "base": base,
                "reads_as": {lang: self.placeholder(lang) for lang in self.languages},
                "pattern": {lang: self.pattern(lang) for lang in self.languages}}
        atomic_write_text(Path(folder) / LESION_FILE, json.dumps(meta, indent=1, ensure_ascii=False))

    @staticmethod
    def read(folder: str | Path) -> tuple[ScriptLesion, str | None] | None:
        """The lesion an organism folder declares and the organism it is applied to, if it has one."""
        path = Path(folder) / LESION_FILE
        if not path.exists():
            return None
        meta = json.loads(path.read_text(encoding="utf-8"))
        return ScriptLesion(tuple(meta["languages"])), meta.get("base")
