"""Which language-identification library should pick a request's per-language threshold? Accuracy and speed of
each one installed (langid, pycld2, lingua-language-detector), measured in one run on the same rows: every
multilingual shared test set whose rows carry their language (XSafety, MultiJail, ToxiCN, COLD, Korean hate
speech, ToxicChat), up to --per rows per language.

  pip install langid pycld2 lingua-language-detector     # the candidates (guardtune[multilingual] ships pycld2)
  python benchmarks/language_id.py [--per 100] [--json out.json]

Accuracy is exact ISO 639-1 match; the speed is ms per text, one text per call (as a request arrives). A
library that cannot name a language (pycld2 on some scripts) counts as wrong.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

SETS = ("xsafety:test", "multijail:test", "toxicn:test", "cold:test", "korean_hate_speech:dev", "toxicchat_human:test")


def rows(per: int) -> list[tuple[str, str]]:
    from guardtune.data import load_any

    by_language: dict[str, list[str]] = defaultdict(list)
    for spec in SETS:
        try:
            for ex in load_any(spec).examples:
                if ex.language:
                    by_language[ex.language].append(ex.prompt)
        except (FileNotFoundError, KeyError) as err:
            print(f"skipped {spec}: {err}")
    out = []
    for language, texts in sorted(by_language.items()):
        out += [(language, t) for t in random.Random(0).sample(texts, min(per, len(texts)))]
    return out


def candidates() -> dict:
    found = {}
    try:
        from langid.langid import LanguageIdentifier, model

        identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        found["langid"] = lambda text: identifier.classify(text)[0]
    except ImportError:
        pass
    try:
        from guardtune.language import detect

        detect("warm up")
        found["pycld2"] = detect  # guardtune's own detector (pycld2 with best effort)
    except ImportError:
        pass
    try:
        from lingua import LanguageDetectorBuilder

        detector = LanguageDetectorBuilder.from_all_languages().build()

        def lingua(text: str) -> str | None:
            found_language = detector.detect_language_of(text)
            return found_language.iso_code_639_1.name.lower() if found_language else None
        found["lingua"] = lingua
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per", type=int, default=100, help="rows per language")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    data = rows(args.per)
    languages = sorted({lang for lang, _ in data})
    print(f"{len(data)} texts in {len(languages)} languages: {', '.join(languages)}")
    results = {}
    for name, detect in candidates().items():
        detect(data[0][1])  # warm-up (loading models)
        start = time.perf_counter()
        guesses = [detect(text) for _, text in data]
        ms = (time.perf_counter() - start) * 1000 / len(data)
        per = {lang: sum(g == lang for (l2, _), g in zip(data, guesses) if l2 == lang) /
               sum(l2 == lang for l2, _ in data) for lang in languages}
        accuracy = sum(g == lang for (lang, _), g in zip(data, guesses)) / len(data)
        results[name] = {"accuracy": accuracy, "ms_per_text": ms, "per_language": per}
        worst = ", ".join(f"{lang} {acc:.0%}" for lang, acc in sorted(per.items(), key=lambda x: x[1])[:4])
        print(f"{name:<8} accuracy {accuracy:.1%}  {ms:.3f} ms/text  weakest: {worst}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
