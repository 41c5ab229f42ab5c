"""BeaverTails, Aegis 2.0 and the OpenAI moderation evaluation set, loaded by hub id.

- PKU-Alignment/BeaverTails: QA pairs; `is_safe` is about the response (response_harmful = not is_safe);
  the 14 `category` flags map through `taxonomy.BEAVERTAILS`. Splits 330k_train, 330k_test, 30k_train,
  30k_test.
- nvidia/Aegis-AI-Content-Safety-Dataset-2.0: prompt_label / response_label "safe"/"unsafe";
  `violated_categories` (comma-separated) go to the prompt when it is unsafe and to the response when it
  is unsafe. Rows whose prompt was redacted upstream are excluded (counted, with the reason).
- mmathys/openai-moderation-api-evaluation: prompts with the 8 short-code flags (S, H, V, HR, SH, S3, H2,
  V2), some unlabelled. prompt_harmful is 1 if any flag is 1, 0 if all are labelled 0, None otherwise.
"""

from __future__ import annotations

from guardtune.data.example import Example, categorise, to_binary
from guardtune.data.hub import hub_rows
from guardtune.data.intake import Excluded, Intake

SAFETY = {"unsafe": 1, "safe": 0}
OPENAI_CODES = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")


def _beavertails(row: dict) -> Example:
    flags = row["category"]
    names = [name for name, on in flags.items() if on]
    harmful = 1 - to_binary("is_safe", row["is_safe"])
    return Example(prompt=row["prompt"], response=row["response"], response_harmful=harmful,
                   response_categories=categorise("category", names, "beavertails"), language="en",
                   source="beavertails")


def _aegis(row: dict) -> Example:
    if row["prompt"].strip() == "REDACTED":
        raise Excluded("prompt redacted upstream")
    response = row.get("response") if isinstance(row.get("response"), str) and row["response"].strip() else None
    prompt_harmful = to_binary("prompt_label", row.get("prompt_label"), SAFETY)
    response_harmful = to_binary("response_label", row.get("response_label"), SAFETY) if response else None
    violated = categorise("violated_categories", row.get("violated_categories") or "", "aegis")
    return Example(prompt=row["prompt"], response=response, prompt_harmful=prompt_harmful,
                   response_harmful=response_harmful,
                   prompt_categories=violated if prompt_harmful else () if prompt_harmful == 0 else None,
                   response_categories=(violated if response_harmful else ()) if response_harmful is not None else None,
                   language="en", source="aegis2", id=str(row.get("id", "")))


def _openai(row: dict) -> Example:
    flags = {code: to_binary(code, row.get(code)) for code in OPENAI_CODES}
    positive = [code for code, v in flags.items() if v == 1]
    complete = all(v is not None for v in flags.values())
    harmful = 1 if positive else 0 if complete else None
    categories = categorise("flags", positive, "openai") if (positive or complete) else None
    return Example(prompt=row["prompt"], prompt_harmful=harmful, prompt_categories=categories, language="en",
                   source="openai_moderation", meta={"flags": {k: v for k, v in flags.items() if v is not None}})


def load_beavertails(split: str, intake: Intake, path: str | None = None) -> None:
    for where, row in hub_rows(path or "PKU-Alignment/BeaverTails", None, split, intake):
        intake.take(where, row, _beavertails)


def load_aegis(split: str, intake: Intake, path: str | None = None) -> None:
    for where, row in hub_rows(path or "nvidia/Aegis-AI-Content-Safety-Dataset-2.0", None, split, intake):
        intake.take(where, row, _aegis)


def load_openai_moderation(split: str, intake: Intake, path: str | None = None) -> None:
    for where, row in hub_rows(path or "mmathys/openai-moderation-api-evaluation", None, split, intake):
        intake.take(where, row, _openai)
