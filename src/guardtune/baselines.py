"""Baselines behind the same Guard interface, so a report can put a fine-tuned guard beside them:

- `TfidfGuard`: word (1-2) and character (2-5) n-gram TF-IDF + one logistic regression per output, trained by
  guardtune on any dataset (`guardtune baseline tfidf --data NAME --out DIR`).
- `HFClassifierGuard`: any Hugging Face sequence-classification checkpoint by id or path (`hf:<id>`), its
  labels mapped onto guardtune's tasks (e.g. `toxic=prompt_harmful`).
"""

from __future__ import annotations

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


class TfidfGuard(GuardBase):
    def __init__(self, labels: LabelSpace | None = None, max_features: int = 200_000, c: float = 4.0, name: str = ""):
        self.labels = labels
        self.max_features = max_features
        self.c = c
        self.name = name or "tfidf"
        self.thresholds = Thresholds()

    def fit(self, examples: Sequence[Example]) -> TfidfGuard:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion

        self.labels = self.labels or LabelSpace.from_examples(examples)
        self.vectorizer_ = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=self.max_features)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                                     max_features=self.max_features))])
        features = self.vectorizer_.fit_transform([text_of(ex) for ex in examples])
        y, known = self.labels.targets(examples)
        self.models_: list[Any] = []
        for j in range(len(self.labels.outputs)):
            rows, target = known[:, j], y[known[:, j], j]
            if len(np.unique(target)) < 2:  # one class only: predict its rate
                self.models_.append(float(target.mean()) if len(target) else 0.0)
                continue
            model = LogisticRegression(C=self.c, max_iter=2000, class_weight="balanced")
            self.models_.append(model.fit(features[rows], target))
        return self

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        features = self.vectorizer_.transform([text_of(ex) for ex in examples])
        columns = [np.full(len(examples), m) if isinstance(m, float) else m.predict_proba(features)[:, 1]
                   for m in self.models_]
        return Scores(self.labels, np.stack(columns, axis=1).astype(np.float32))

    def save(self, directory: str | Path) -> Path:
        import joblib

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump({"vectorizer": self.vectorizer_, "models": self.models_}, directory / "tfidf.joblib")
        self.labels.save(directory)
        record_kind(directory, "tfidf", c=self.c, max_features=self.max_features)
        return directory


def load_tfidf(directory: Path, info: dict[str, Any]) -> TfidfGuard:
    import joblib

    guard = TfidfGuard(LabelSpace.read(directory), info["max_features"], info["c"], name=directory.name)
    state = joblib.load(directory / "tfidf.joblib")  # our own file, written by TfidfGuard.save
    guard.vectorizer_, guard.models_ = state["vectorizer"], state["models"]
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
