"""DATASETS: every dataset guardtune knows by name. Adding one is an adapter function and one entry here.

`kind` says where the rows come from: "local" (a folder under the data root), "hub" (by hub id through
`datasets.load_dataset`, or a local copy under <data root>/hub/<id>) or "embedded" (shipped in the package).
`splits` are the official splits; datasets without official train/test splits get grouped hash splits
(train / validation / test = 70 / 10 / 20 %) derived from `base`. Every dataset also has split "all".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardtune.data import (chinese, davidson, demo, do_not_answer, ethos, harmbench, hub_sources,
                            korean_hate_speech, multijail, paradetox, phtest, simple_safety_tests, toxic_spans,
                            toxicchat, wildguard, xsafety)
from guardtune.data.intake import Intake

P, R, REF = "prompt_harmful", "response_harmful", "response_refusal"
PC, RC, RAT, RW = "prompt_categories", "response_categories", "rationale", "rewrite"


@dataclass(frozen=True)
class DatasetInfo:
    load: Callable[..., None]  # local: (root, split, intake); hub/embedded: (split, intake)
    kind: str
    languages: tuple[str, ...]
    tasks: tuple[str, ...]
    splits: tuple[str, ...]
    rows: str
    licence: str
    about: str
    folder: str | None = None
    hub_id: str | None = None
    base: str | None = None  # the native split that derived train/validation/test are cut from

    @property
    def all_splits(self) -> tuple[str, ...]:
        derived = ("train", "validation", "test") if self.base else ()
        return tuple(dict.fromkeys(self.splits + derived + ("all",)))

    def available(self, root: Path) -> bool:
        if self.kind == "local":
            return (root / self.folder).is_dir()
        if self.kind == "hub":
            return (root / "hub" / self.hub_id).is_dir()
        return True

    def read(self, root: Path, split: str, intake: Intake) -> None:
        """Read one native split into `intake`."""
        if self.kind == "local":
            self.load(root, split, intake)
        else:
            self.load(split, intake)


ALL_LANGS = ("ar", "zh", "cs", "nl", "en", "fr", "de", "hi", "th", "it", "ja", "ko", "pl", "pt", "ru", "es", "sv")

DATASETS: dict[str, DatasetInfo] = {
    "toxicchat_human": DatasetInfo(
        toxicchat.load_human, "local", ("en",), (P, PC), ("train", "test"), "2,801 / 2,853", "CC BY-NC 4.0",
        "real user prompts to a chatbot: toxicity + jailbreaking (human-annotated)", folder="toxicchat_human"),
    "do_not_answer": DatasetInfo(
        do_not_answer.load, "local", ("en",), (P, R, REF, PC), ("all",), "939 prompts x 6 responses",
        "CC BY-NC-SA 4.0", "risky prompts with 6 models' responses: harm and refusal", folder="do_not_answer",
        base="all"),
    "multijail": DatasetInfo(
        multijail.load, "local", multijail.LANGUAGES, (P, PC), ("all",), "315 x 10 languages", "MIT",
        "harmful prompts in 10 languages (positives only)", folder="multijail", base="all"),
    "xsafety": DatasetInfo(
        xsafety.load, "local", tuple(xsafety.FOLDERS.values()), (P, PC), ("all",), "27,999", "Apache-2.0",
        "safety-sensitive prompts in 14 scenarios, 10 languages", folder="xsafety", base="all"),
    "harmbench": DatasetInfo(
        harmbench.load, "local", ("en",), (P, PC), harmbench.SPLITS, "400 (+520 AdvBench, 313 StrongREJECT)",
        "MIT", "harmful behaviours (positives only)", folder="harmbench"),
    "simple_safety_tests": DatasetInfo(
        simple_safety_tests.load, "local", ("en",), (P, PC), ("test",), "100", "CC BY 4.0",
        "clear-cut harmful prompts in 5 harm areas (positives only)", folder="simple_safety_tests"),
    "ethos": DatasetInfo(
        ethos.load, "local", ("en",), (P, PC), ("all",), "985", "GPL-3.0",
        "hate speech, binary + target groups", folder="ethos", base="all"),
    "davidson_hate_offensive": DatasetInfo(
        davidson.load, "local", ("en",), (P, PC), ("all",), "24,766", "MIT",
        "tweets: hate speech / offensive language / neither", folder="davidson_hate_offensive", base="all"),
    "phtest": DatasetInfo(
        phtest.load, "local", ("en",), (P,), ("all",), "3,260 (2,069 harmless, 1,191 controversial)",
        "none stated (research use)", "pseudo-harmful prompts: false-refusal / over-blocking check",
        folder="phtest", base="all"),
    "toxicn": DatasetInfo(
        chinese.load_toxicn, "local", ("zh",), (P, PC), ("train", "test"), "9,600 / 2,411", "CC BY-NC-ND 4.0",
        "Chinese toxic language: toxic, type, targets", folder="toxicn"),
    "cold": DatasetInfo(
        chinese.load_cold, "local", ("zh",), (P, PC), ("train", "dev", "test"), "25,726 / 6,431 / 5,323",
        "Apache-2.0", "Chinese offensive language", folder="cold"),
    "korean_hate_speech": DatasetInfo(
        korean_hate_speech.load, "local", ("ko",), (P, PC), ("train", "dev", "test"), "7,896 / 471 / 974 (unlabelled)",
        "CC BY-SA 4.0", "Korean news comments: none / offensive / hate", folder="korean_hate_speech"),
    "toxic_spans": DatasetInfo(
        toxic_spans.load, "local", ("en",), (P, RAT), ("train", "trial", "test"), "7,939 / 690 / 2,000", "CC0",
        "toxic posts with character-offset rationales", folder="toxic_spans"),
    "paradetox": DatasetInfo(
        paradetox.load_en, "local", ("en",), (P, RW), ("all", "cannot_rewrite"), "11,927 (+12,059 cannot-rewrite)",
        "CC0", "detoxification: toxic sentence -> neutral rewrites", folder="paradetox", base="all"),
    "paradetox_style": DatasetInfo(
        paradetox.load_style, "local", ("en",), (P,), ("all",), "11,927 toxic + 19,743 neutral",
        "CC0", "ParaDetox as toxicity classification (sources 1, rewrites 0), for detox style accuracy",
        folder="paradetox", base="all"),
    "paradetox_spans": DatasetInfo(
        paradetox.load_spans, "local", ("en",), (P, RAT), ("all",), "11,927 toxic + 11,927 neutral",
        "CC0", "ParaDetox pairs as span rationales (words a rewrite removes), rewrites as harmless",
        folder="paradetox", base="all"),
    "ru_paradetox": DatasetInfo(
        paradetox.load_ru, "local", ("ru",), (P, RW), ("train", "dev", "test"), "6,948 / 800 / 875",
        "openrail++ (HF card)", "Russian detoxification", folder="ru_paradetox"),
    "demo": DatasetInfo(
        demo.load, "embedded", demo.LANGUAGES, (P, R, REF, PC, RC), ("all",), "embedded", "Apache-2.0",
        "guardtune's own small multilingual demo set", base="all"),
    "toxicchat": DatasetInfo(
        toxicchat.load_hub, "hub", ("en",), (P, PC), ("train", "test"), "5,082 / 5,083", "CC BY-NC 4.0",
        "full ToxicChat (toxicchat0124)", hub_id=toxicchat.HUB_ID),
    "polyguardmix": DatasetInfo(
        wildguard.load_polyguardmix, "hub", ALL_LANGS, (P, R, REF, PC, RC), ("train",), "1.91M", "CC BY 4.0",
        "PolyGuard training mix, 17 languages", hub_id="ToxicityPrompts/PolyGuardMix"),
    "polyguardprompts": DatasetInfo(
        wildguard.load_polyguardprompts, "hub", ALL_LANGS, (P, R, REF, PC, RC), ("test",), "29,325", "CC BY 4.0",
        "PolyGuard benchmark, 17 languages", hub_id="ToxicityPrompts/PolyGuardPrompts"),
    "wildguardmix": DatasetInfo(
        wildguard.load_wildguardmix, "hub", ("en",), (P, R, REF, PC), ("train", "test"), "86,759 / 1,725",
        "ODC-BY (gated)", "WildGuardTrain / WildGuardTest", hub_id="allenai/wildguardmix"),
    "beavertails": DatasetInfo(
        hub_sources.load_beavertails, "hub", ("en",), (R, RC), ("330k_train", "330k_test", "30k_train", "30k_test"),
        "301k / 33k / 27k / 3k", "CC BY-NC 4.0", "QA pairs with 14 harm categories",
        hub_id="PKU-Alignment/BeaverTails"),
    "aegis2": DatasetInfo(
        hub_sources.load_aegis, "hub", ("en",), (P, R, PC, RC), ("train", "validation", "test"),
        "25,007 / 1,245 / 1,964", "CC BY 4.0 (gated)", "Aegis 2.0 content safety",
        hub_id="nvidia/Aegis-AI-Content-Safety-Dataset-2.0"),
    "openai_moderation": DatasetInfo(
        hub_sources.load_openai_moderation, "hub", ("en",), (P, PC), ("train",), "1,680", "MIT",
        "OpenAI moderation evaluation set (S, H, V, HR, SH, S3, H2, V2)",
        hub_id="mmathys/openai-moderation-api-evaluation"),
}


def get(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}, "
                       "or give a path to a .jsonl/.csv/.tsv/.parquet file")
    return DATASETS[name]

