"""WildGuardMix (allenai/wildguardmix) and PolyGuard (ToxicityPrompts/PolyGuardMix, PolyGuardPrompts).

PolyGuard is WildGuardMix plus in-the-wild data translated into 17 languages, with the same label words:
prompt/response harm "harmful"/"unharmful", refusal "refusal"/"compliance". PolyGuard's categories are
Llama Guard 3 S-codes (the canonical taxonomy); WildGuard's `subcategory` names are kept as they are
("benign" means no category).
"""

from __future__ import annotations

from guardtune.data.example import Example, categorise, to_binary
from guardtune.data.hub import hub_rows
from guardtune.data.intake import Intake

HARM = {"harmful": 1, "unharmful": 0}
REFUSAL = {"refusal": 1, "compliance": 0}
LANGUAGE_NAMES = {"English": "en", "Arabic": "ar", "Chinese": "zh", "Czech": "cs", "Dutch": "nl", "French": "fr",
                  "German": "de", "Hindi": "hi", "Thai": "th", "Italian": "it", "Japanese": "ja", "Korean": "ko",
                  "Polish": "pl", "Portuguese": "pt", "Russian": "ru", "Spanish": "es", "Swedish": "sv"}


def _response(row: dict) -> str | None:
    text = row.get("response")
    return text if isinstance(text, str) and text.strip() else None


def _codes(field: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return ()
    return categorise(field, value, "canonical")


def _labels(row: dict, response: str | None) -> dict:
    out = {"prompt_harmful": to_binary("prompt_harm_label", row.get("prompt_harm_label"), HARM)}
    if response is not None:
        out["response_harmful"] = to_binary("response_harm_label", row.get("response_harm_label"), HARM)
        out["response_refusal"] = to_binary("response_refusal_label", row.get("response_refusal_label"), REFUSAL)
    return out


def _language(value: str | None) -> str:
    return LANGUAGE_NAMES.get(value, value) if value else "und"


def _polyguard(row: dict, source: str) -> Example:
    response = _response(row)
    meta = row.get("metadata") or {}
    language = _language(row.get("language") or meta.get("language"))
    prompt_cats = _codes("prompt_safety_categories", row.get("prompt_safety_categories", row.get("prompt_categories")))
    response_cats = _codes("response_safety_categories",
                           row.get("response_safety_categories", row.get("response_categories")))
    return Example(prompt=row["prompt"], response=response, **_labels(row, response), prompt_categories=prompt_cats,
                   response_categories=response_cats if response is not None else None, language=language,
                   source=source, id=str(row.get("id", "")), meta={"origin": meta.get("source", "")})


def _wildguard(row: dict) -> Example:
    response = _response(row)
    sub = row.get("subcategory")
    categories = None if sub is None else () if sub == "benign" else (sub,)
    return Example(prompt=row["prompt"], response=response, **_labels(row, response), prompt_categories=categories,
                   language="en", source="wildguardmix", meta={"adversarial": bool(row.get("adversarial"))})


def load_polyguardmix(split: str, intake: Intake, path: str | None = None) -> None:
    for where, row in hub_rows(path or "ToxicityPrompts/PolyGuardMix", None, split, intake):
        intake.take(where, row, lambda r: _polyguard(r, "polyguardmix"))


def load_polyguardprompts(split: str, intake: Intake, path: str | None = None) -> None:
    for where, row in hub_rows(path or "ToxicityPrompts/PolyGuardPrompts", None, split, intake):
        intake.take(where, row, lambda r: _polyguard(r, "polyguardprompts"))


def load_wildguardmix(split: str, intake: Intake, path: str | None = None) -> None:
    config = {"train": "wildguardtrain", "test": "wildguardtest"}[split]
    for where, row in hub_rows(path or "allenai/wildguardmix", config, split, intake):
        intake.take(where, row, _wildguard)
