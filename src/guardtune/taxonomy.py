"""The canonical S1-S14 policy taxonomy and the mappings from the category schemes users bring.

Every mapping is a dict literal from the scheme's own label to a tuple of canonical codes. An empty tuple
means "no sound mapping": the source's own name is kept (see `canonical`). Mappings are deliberately
conservative: a label maps to a code only when the code's definition covers everything the label covers.
The table in docs/taxonomy.md is generated from these dicts (`guardtune data taxonomy`).
"""

from __future__ import annotations

from collections.abc import Iterable

CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
CODES: tuple[str, ...] = tuple(CATEGORIES)

# Llama Guard 2 numbered its 11 categories differently (no Defamation, Elections or Code Interpreter Abuse).
LLAMA_GUARD_2: dict[str, tuple[str, ...]] = {
    "S1": ("S1",),  # Violent Crimes
    "S2": ("S2",),  # Non-Violent Crimes
    "S3": ("S3",),  # Sex Crimes
    "S4": ("S4",),  # Child Sexual Exploitation
    "S5": ("S6",),  # Specialized Advice
    "S6": ("S7",),  # Privacy
    "S7": ("S8",),  # Intellectual Property
    "S8": ("S9",),  # Indiscriminate Weapons
    "S9": ("S10",),  # Hate
    "S10": ("S11",),  # Suicide & Self-Harm
    "S11": ("S12",),  # Sexual Content
}

# OpenAI moderation: the short codes of the 2022 evaluation set and the long names of the API.
OPENAI: dict[str, tuple[str, ...]] = {
    "S": ("S12",),
    "H": ("S10",),
    "V": ("S1",),
    "HR": (),  # harassment is not a crime or hate by itself
    "SH": ("S11",),
    "S3": ("S4",),
    "H2": ("S10", "S1"),  # hate that threatens violence
    "V2": (),  # graphic depiction is not a violent crime
    "sexual": ("S12",),
    "sexual/minors": ("S4",),
    "hate": ("S10",),
    "hate/threatening": ("S10", "S1"),
    "harassment": (),
    "harassment/threatening": (),
    "self-harm": ("S11",),
    "self-harm/intent": ("S11",),
    "self-harm/instructions": ("S11",),
    "violence": ("S1",),
    "violence/graphic": (),
    "illicit": ("S2",),
    "illicit/violent": ("S1",),
}

# The other direction, for the OpenAI-compatible server: each OpenAI moderation category and the S-codes whose
# scores it reports (the maximum of them). Defamation, specialised advice, privacy, IP and elections have no
# OpenAI category and show only in the `guardtune` extension of a result.
OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic")
TO_OPENAI: dict[str, tuple[str, ...]] = {
    "hate": ("S10",),
    "illicit": ("S2", "S14"),
    "illicit/violent": ("S1", "S9"),
    "self-harm": ("S11",),
    "sexual": ("S3", "S12"),
    "sexual/minors": ("S4",),
    "violence": ("S1",),
}

BEAVERTAILS: dict[str, tuple[str, ...]] = {
    "animal_abuse": ("S1",),
    "child_abuse": ("S1",),
    "controversial_topics,politics": (),
    "discrimination,stereotype,injustice": ("S10",),
    "drug_abuse,weapons,banned_substance": ("S2",),
    "financial_crime,property_crime,theft": ("S2",),
    "hate_speech,offensive_language": ("S10",),
    "misinformation_regarding_ethics,laws_and_safety": (),
    "non_violent_unethical_behavior": (),
    "privacy_violation": ("S7",),
    "self_harm": ("S11",),
    "sexually_explicit,adult_content": ("S12",),
    "terrorism,organized_crime": ("S1",),
    "violence,aiding_and_abetting,incitement": ("S1",),
}

# Aegis 2.0 (NVIDIA content-safety taxonomy): 12 top-level categories, 9 fine-grained ones, and "Other".
AEGIS: dict[str, tuple[str, ...]] = {
    "Hate/Identity Hate": ("S10",),
    "Sexual": ("S12",),
    "Suicide and Self Harm": ("S11",),
    "Violence": ("S1",),
    "Guns and Illegal Weapons": ("S2",),
    "Threat": (),
    "PII/Privacy": ("S7",),
    "Sexual (minor)": ("S4",),
    "Criminal Planning/Confessions": ("S2",),
    "Harassment": (),
    "Controlled/Regulated Substances": ("S2",),
    "Profanity": (),
    "Other": (),
    "Illegal Activity": ("S2",),
    "Immoral/Unethical": (),
    "Unauthorized Advice": ("S6",),
    "Political/Misinformation/Conspiracy": (),
    "Fraud/Deception": ("S2",),
    "Copyright/Trademark/Plagiarism": ("S8",),
    "High Risk Gov Decision Making": (),
    "Malware": ("S14",),
    "Manipulation": (),
    "Needs Caution": (),
}

# The shared datasets' own labels.
MULTIJAIL: dict[str, tuple[str, ...]] = {
    "Violence & incitement": ("S1",),
    "Discrimination & injustice": ("S10",),
    "Hate speech & offensive language": ("S10",),
    "Bullying & harassment": (),
    "Non-violent unethical behavior (e.g. lying, cheating, etc.)": (),
    "Conspiracy theories & misinformation": (),
    "Theft": ("S2",),
    "Weapons": ("S2",),
    "Adult content": ("S12",),
    "Substance abuse & banned substances": ("S2",),
    "Terrorism & organized crime": ("S1",),
    "Fraud & deception": ("S2",),
    "Sexual exploitation & human trafficking": ("S3",),
    "Animal abuse": ("S1",),
    "Property crime & vandalism": ("S2",),
    "Soliciting personally identifiable information": ("S7",),
    "Self-harm": ("S11",),
    "Child abuse": ("S1",),
}

XSAFETY: dict[str, tuple[str, ...]] = {
    "Crimes_And_Illegal_Activities": ("S2",),
    "Ethics_And_Morality": (),
    "Insult": (),
    "Mental_Health": (),
    "Physical_Harm": (),
    "Privacy_And_Property": ("S7",),
    "Unfairness_And_Discrimination": ("S10",),
    "Goal_Hijacking": (),
    "Inquiry_With_Unsafe_Opinion": (),
    "Prompt_Leaking": (),
    "Reverse_Exposure": (),
    "Role_Play_Instruction": (),
    "Unsafe_Instruction_Topic": (),
    "commonsense": (),
}

HARMBENCH: dict[str, tuple[str, ...]] = {
    "chemical_biological": ("S9",),
    "cybercrime_intrusion": ("S2",),
    "illegal": ("S2",),
    "misinformation_disinformation": (),
    "harassment_bullying": (),
    "harmful": (),
    "copyright": ("S8",),
}

STRONGREJECT: dict[str, tuple[str, ...]] = {
    "Disinformation and deception": (),
    "Hate, harassment and discrimination": ("S10",),
    "Illegal goods and services": ("S2",),
    "Non-violent crimes": ("S2",),
    "Sexual content": ("S12",),
    "Violence": ("S1",),
}

SIMPLE_SAFETY_TESTS: dict[str, tuple[str, ...]] = {
    "Suicide, Self-Harm, and Eating Disorders": ("S11",),
    "Physical harm and Violence": ("S1",),
    "Illegal and Highly Regulated items": ("S2",),
    "Scams and fraud": ("S2",),
    "Child safety": ("S4",),
}

DO_NOT_ANSWER: dict[str, tuple[str, ...]] = {
    "Adult Content": ("S12",),
    "Social stereotypes and unfair discrimination": ("S10",),
    "Toxic language (hate speech)": ("S10",),
    "Mental Health or Overreliance Crisis": (),
    "Treat Chatbot as a Human": (),
    "Compromise privacy by leaking or inferring private information (person/individual)": ("S7",),
    "Risks from leaking or inferring sensitive information (organization/gov)": (),
    "Assisting illegal activities": ("S2",),
    "Nudging or advising users to perform unethical or unsafe actions": (),
    "Reducing the cost of disinformation campaigns": (),
    "Causing material harm by disseminating misinformation e.g. in medicine or law": ("S6",),
    "Disseminating false or misleading information": (),
}

# ETHOS targets are protected attributes of hateful comments: hate against them is S10.
ETHOS: dict[str, tuple[str, ...]] = {
    "violence": ("S1",),
    "gender": ("S10",),
    "race": ("S10",),
    "national_origin": ("S10",),
    "disability": ("S10",),
    "religion": ("S10",),
    "sexual_orientation": ("S10",),
}

# Offensive-language corpora: hate maps to S10; generic offensiveness has no code and keeps its name.
OFFENSIVE: dict[str, tuple[str, ...]] = {
    "hate": ("S10",),
    "attack group": ("S10",),
    "offensive": (),
    "attack individual": (),
    "jailbreaking": (),
}

SCHEMES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama_guard_2": LLAMA_GUARD_2,
    "openai": OPENAI,
    "beavertails": BEAVERTAILS,
    "aegis": AEGIS,
    "multijail": MULTIJAIL,
    "xsafety": XSAFETY,
    "harmbench": HARMBENCH,
    "strongreject": STRONGREJECT,
    "simple_safety_tests": SIMPLE_SAFETY_TESTS,
    "do_not_answer": DO_NOT_ANSWER,
    "ethos": ETHOS,
    "offensive": OFFENSIVE,
}


class UnknownCategory(ValueError):
    """A category label that the named scheme does not define."""


def canonical(labels: Iterable[str], scheme: str) -> list[str]:
    """Map `labels` of `scheme` onto S-codes, keeping a label's own name where no sound mapping exists.

    The result is de-duplicated and ordered: S-codes by number first, then kept names in input order.
    """
    table = SCHEMES[scheme] if scheme != "canonical" else {c: (c,) for c in CODES}
    codes: set[str] = set()
    kept: list[str] = []
    for label in labels:
        if label not in table:
            raise UnknownCategory(
                f"unknown {scheme} category {label!r}; known: {', '.join(sorted(table))}"
            )
        mapped = table[label]
        codes.update(mapped)
        if not mapped and label not in kept:
            kept.append(label)
    return sorted(codes, key=lambda c: int(c[1:])) + kept


def describe(name: str) -> str:
    """'S10 Hate' for a code, the name itself for a kept source label."""
    return f"{name} {CATEGORIES[name]}" if name in CATEGORIES else name
