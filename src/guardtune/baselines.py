"""Baselines behind the same Guard interface, so a report can put a fine-tuned guard beside them:

- `TfidfGuard`: word (1-2) and character (2-5) n-gram TF-IDF + one logistic regression per output, trained by
  guardtune on any dataset (`guardtune baseline tfidf --data NAME --out DIR`).
- `HFClassifierGuard`: any Hugging Face sequence-classification checkpoint by id or path (`hf:<id>`), its
  labels mapped onto guardtune's tasks (e.g. `toxic=prompt_harmful`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.encoding import template
from guardtune.guard import GuardBase, Scores, Thresholds, record_kind
from guardtune.labels import LabelSpace


def text_of(example: Example) -> str:
    prompt, response = template(example)
    return prompt if response is None else f"{prompt}\n{response}"


# the two vectorisers: word 1-2-grams and character 2-5-grams (within word boundaries), sublinear TF, l2 norm
VECTORIZERS = {"word": {"analyzer": "word", "ngram_range": (1, 2)}, "char": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
TFIDF_VOCABULARY = "tfidf-vocabulary.json"  # the terms of each vectoriser (plain JSON)
TFIDF_WEIGHTS = "tfidf.safetensors"  # idf per term, and per output a logistic regression's weights and bias


class TfidfGuard(GuardBase):
    """Word and character n-gram TF-IDF + one logistic regression per output (class-balanced). Saved as JSON and
    safetensors (never a pickle), so loading someone else's baseline runs no code."""

    def __init__(self, labels: LabelSpace | None = None, max_features: int = 200_000, c: float = 4.0, name: str = ""):
        self.labels = labels
        self.max_features = max_features
        self.c = c
        self.name = name or "tfidf"
        self.thresholds = Thresholds()

    def fit(self, examples: Sequence[Example]) -> TfidfGuard:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.labels = self.labels or LabelSpace.from_examples(examples)
        texts = [text_of(ex) for ex in examples]
        self.vectorizers_ = {name: TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=self.max_features,
                                                   **options).fit(texts) for name, options in VECTORIZERS.items()}
        features = self._features(texts)
        y, known = self.labels.targets(examples)
        self.weights_: list[tuple[np.ndarray, float] | float] = []  # (coefficients, intercept), or a constant rate
        for j in range(len(self.labels.outputs)):
            rows, target = known[:, j], y[known[:, j], j]
            if len(np.unique(target)) < 2:  # one class only: predict its rate
                self.weights_.append(float(target.mean()) if len(target) else 0.0)
                continue
            model = LogisticRegression(C=self.c, max_iter=2000, class_weight="balanced").fit(features[rows], target)
            self.weights_.append((model.coef_[0].astype(np.float64), float(model.intercept_[0])))
        return self

    def _features(self, texts: list[str]) -> Any:
        from scipy.sparse import hstack

        return hstack([self.vectorizers_[name].transform(texts) for name in VECTORIZERS]).tocsr()

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        features = self._features([text_of(ex) for ex in examples])
        columns = [np.full(len(examples), w) if isinstance(w, float) else
                   1 / (1 + np.exp(-(features @ w[0] + w[1]))) for w in self.weights_]  # LogisticRegression's own
        return Scores(self.labels, np.stack(columns, axis=1).astype(np.float32))

    def save(self, directory: str | Path) -> Path:
        import torch
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocabulary = {name: sorted(v.vocabulary_, key=v.vocabulary_.get) for name, v in self.vectorizers_.items()}
        (directory / TFIDF_VOCABULARY).write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        tensors = {f"idf.{name}": torch.from_numpy(v.idf_.astype(np.float64)) for name, v in self.vectorizers_.items()}
        for j, w in enumerate(self.weights_):
            if isinstance(w, float):
                tensors[f"rate.{j}"] = torch.tensor([w], dtype=torch.float64)
            else:
                tensors[f"coef.{j}"] = torch.from_numpy(w[0])
                tensors[f"intercept.{j}"] = torch.tensor([w[1]], dtype=torch.float64)
        save_file(tensors, str(directory / TFIDF_WEIGHTS))
        self.labels.save(directory)
        record_kind(directory, "tfidf", c=self.c, max_features=self.max_features)
        return directory


def load_tfidf(directory: Path, info: dict[str, Any]) -> TfidfGuard:
    """A saved TF-IDF baseline: vocabularies from JSON, numbers from safetensors; checked against each other."""
    from safetensors.numpy import load_file
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not (directory / TFIDF_WEIGHTS).is_file():
        old = " (a tfidf.joblib from an older guardtune is a pickle and is never loaded: train it again)" \
            if (directory / "tfidf.joblib").exists() else ""
        raise FileNotFoundError(f"{directory}: no {TFIDF_WEIGHTS}{old}")
    labels = LabelSpace.read(directory)
    guard = TfidfGuard(labels, int(info.get("max_features", 200_000)), float(info.get("c", 4.0)), name=directory.name)
    vocabulary = json.loads((directory / TFIDF_VOCABULARY).read_text(encoding="utf-8"))
    tensors = load_file(str(directory / TFIDF_WEIGHTS))
    guard.vectorizers_ = {}
    for name, options in VECTORIZERS.items():
        terms = vocabulary.get(name)
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms) or len(set(terms)) != len(terms):
            raise ValueError(f"{directory / TFIDF_VOCABULARY}: {name!r} must be a list of distinct terms")
        vectorizer = TfidfVectorizer(sublinear_tf=True, vocabulary={t: i for i, t in enumerate(terms)}, **options)
        vectorizer.idf_ = tensors[f"idf.{name}"]  # checked against the vocabulary's size by scikit-learn
        guard.vectorizers_[name] = vectorizer
    width = sum(len(vocabulary[name]) for name in VECTORIZERS)
    guard.weights_ = []
    for j, output in enumerate(labels.outputs):
        if f"rate.{j}" in tensors:
            guard.weights_.append(float(tensors[f"rate.{j}"][0]))
        elif f"coef.{j}" in tensors and tensors[f"coef.{j}"].shape == (width,):
            guard.weights_.append((tensors[f"coef.{j}"], float(tensors[f"intercept.{j}"][0])))
        else:
            raise ValueError(f"{directory / TFIDF_WEIGHTS}: no weights of {width} features for output {output!r}")
    guard.thresholds = Thresholds.read(directory)
    return guard


POSITIVE_NAMES = ("toxic", "toxicity", "harmful", "unsafe", "hate", "offensive", "label_1", "1", "injection", "jailbreak")


def default_label_map(id2label: dict[int, str]) -> dict[str, str]:
    """Which checkpoint label means harmful, when the user gives no map: one label, or the one that says so."""
    names = list(id2label.values())
    if len(names) == 1:
        return {names[0]: "prompt_harmful"}
    for name in names:
        if name.lower() in POSITIVE_NAMES:
            return {name: "prompt_harmful"}
    raise ValueError(f"cannot tell which of the labels {names} means harmful; give a map such as "
                     f"--label-map {names[-1]}=prompt_harmful")


class HFClassifierGuard(GuardBase):
    """A Hugging Face sequence classifier scored through guardtune: prompt tasks read the prompt, response tasks
    the response. Probabilities: softmax over single-label heads, sigmoid over multi-label or 1-logit heads."""

    def __init__(self, model_id: str, label_map: dict[str, str] | None = None, max_length: int = 512,
                 batch_size: int = 32, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from guardtune.models.backbone import resolve

        path = resolve(model_id)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()
        if device:
            self.model.to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.label_map = label_map or default_label_map(id2label)
        by_name = {v: k for k, v in id2label.items()}
        unknown = sorted(set(self.label_map) - set(by_name))
        if unknown:
            raise ValueError(f"{model_id} has no label(s) {unknown}; its labels: {sorted(by_name)}")
        self.columns = {out: by_name[name] for name, out in self.label_map.items()}
        tasks = tuple(t for t in ("prompt_harmful", "response_harmful", "response_refusal") if t in self.columns)
        cats = {f: tuple(o.split("/", 1)[1] for o in self.columns if o.startswith(f + "/"))
                for f in ("prompt_categories", "response_categories")}
        self.labels = LabelSpace(tasks, cats["prompt_categories"], cats["response_categories"])
        self.thresholds = Thresholds()
        self.name, self.max_length, self.batch_size = f"hf:{model_id}", max_length, batch_size
        self.multi_label = self.model.config.problem_type == "multi_label_classification" or len(id2label) == 1

    def _probs(self, texts: list[str], batch_size: int | None, show_progress: bool) -> np.ndarray:
        import torch

        from guardtune.encoding import score_batches

        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

        @torch.inference_mode()
        def forward(batch: dict) -> np.ndarray:
            logits = self.model(**{k: v.to(self.model.device) for k, v in batch.items()}).logits.float()
            return (torch.sigmoid(logits) if self.multi_label else logits.softmax(-1)).cpu().numpy()

        return score_batches(ids, self.tokenizer.pad_token_id or 0, forward, self.model.config.num_labels,
                             batch_size or self.batch_size, self.max_length, show_progress)

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        probs = np.zeros((len(examples), len(self.labels.outputs)), dtype=np.float32)
        for side in ("prompt", "response"):
            outputs = [o for o in self.labels.outputs if o.startswith(side)]
            rows = [i for i, ex in enumerate(examples) if getattr(ex, side) is not None]
            if outputs and rows:
                p = self._probs([getattr(examples[i], side) for i in rows], batch_size, show_progress)
                for o in outputs:
                    probs[rows, self.labels.index(o)] = p[:, self.columns[o]]
        return Scores(self.labels, probs)


# ---- detoxification baselines (the Rewriter protocol) ----------------------------------------------------------

def _key(word: str) -> str:
    return word.lower().strip(".,!?;:'\"()[]*")


class CopyRewriter:
    """The input, unchanged: the floor every detox system must beat on style and the ceiling on similarity."""

    def __init__(self, name: str = "copy"):
        self.name = name

    def rewrite(self, examples: Sequence[Example], batch_size: int | None = None,
                show_progress: bool = False) -> list[str]:
        return [ex.prompt for ex in examples]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record_kind(directory, "copy")
        return directory


class DeleteRewriter:
    """The detox literature's "Delete" baseline: drop the words that training pairs delete (a word is in the
    lexicon when at least `min_count` toxic sources contain it and at least `min_rate` of those rewrites drop
    it)."""

    def __init__(self, min_count: int = 3, min_rate: float = 0.5, name: str = "delete"):
        self.min_count, self.min_rate, self.name = min_count, min_rate, name
        self.lexicon_: set[str] = set()

    def fit(self, examples: Sequence[Example]) -> DeleteRewriter:
        from collections import Counter

        from guardtune.detox import references_of
        from guardtune.edits import words

        seen: Counter = Counter()
        dropped: Counter = Counter()
        for ex in examples:
            refs = references_of(ex)
            if not refs:
                continue
            kept = {_key(w) for w in words(refs[0])}
            for key in {_key(w) for w in words(ex.prompt)} - {""}:
                seen[key] += 1
                dropped[key] += key not in kept
        self.lexicon_ = {k for k, n in seen.items() if n >= self.min_count and dropped[k] / n >= self.min_rate}
        if not seen:
            raise ValueError("no training pairs with a rewrite to learn the lexicon from")
        return self

    def rewrite(self, examples: Sequence[Example], batch_size: int | None = None,
                show_progress: bool = False) -> list[str]:
        from guardtune.edits import words

        return [" ".join(w for w in words(ex.prompt) if _key(w) not in self.lexicon_) for ex in examples]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "lexicon.json").write_text(json.dumps(sorted(self.lexicon_), ensure_ascii=False) + "\n",
                                               encoding="utf-8")
        record_kind(directory, "delete", min_count=self.min_count, min_rate=self.min_rate)
        return directory


def load_delete(directory: Path, info: dict[str, Any]) -> DeleteRewriter:
    rewriter = DeleteRewriter(int(info.get("min_count", 3)), float(info.get("min_rate", 0.5)), name=directory.name)
    lexicon = json.loads((directory / "lexicon.json").read_text(encoding="utf-8"))
    if not isinstance(lexicon, list) or not all(isinstance(w, str) for w in lexicon):
        raise ValueError(f"{directory / 'lexicon.json'}: must be a list of words")
    rewriter.lexicon_ = set(lexicon)
    return rewriter
