"""The language of a text, for per-language thresholds when a request does not say (see `calibrate --per
language`). The detector was chosen by `benchmarks/language_id.py` (accuracy and speed on the shared
multilingual test sets, one run; docs/results.md): pycld2 (Compact Language Detector 2, its model compiled
in; `pip install guardtune[multilingual]`) was as accurate as langid and lingua on every language guardtune
has thresholds for, and about 300 times faster (0.01 ms a text). It cannot name Javanese: such a text gets
the global threshold (as does any language without its own). Only the first MAX_CHARS characters are read: a
language is clear long before that, and a hostile megabyte costs nothing more.
"""

from __future__ import annotations

MAX_CHARS = 1000


def _cld2():
    try:
        import pycld2
    except ImportError as err:
        raise ImportError("detecting a request's language needs pycld2: pip install 'guardtune[multilingual]' "
                          "(or send the language with the request)") from err
    return pycld2


def detect(text: str) -> str | None:
    """The ISO 639-1 code of `text`'s language, or None when it cannot tell (empty, digits and punctuation,
    too little text, a language CLD2 does not know)."""
    cld2 = _cld2()
    text = (text or "")[:MAX_CHARS]
    if not any(ch.isalpha() for ch in text):
        return None
    # CLD2 reads UTF-8; a lone surrogate cannot be encoded, and control characters can make it refuse
    clean = "".join(ch for ch in text if ch.isprintable() or ch.isspace()).encode("utf-8", "replace")
    try:
        reliable, _, found = cld2.detect(clean, bestEffort=True)
    except cld2.error:
        return None
    code = found[0][1] if found else "un"
    return None if code in ("un", "xxx") else code.split("-")[0].lower()
