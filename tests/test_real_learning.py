"""Real learning on real data: the embedded MiniLM with LoRA, a short budget, on ToxicChat (human-annotated)."""

from __future__ import annotations

import pytest

from guardtune import config
from guardtune.train import train


@pytest.mark.shared_data
@pytest.mark.slow
def test_minilm_lora_on_toxicchat_ranks_toxic_prompts_far_above_chance(shared_root, tmp_path):
    cfg = config.load(None, [
        f"output_dir={tmp_path / 'run'}",
        "data.train={name: toxicchat_human:train, sample: 600, seed: 0}",
        "data.validation=null",
        "data.test={name: toxicchat_human:test, sample: 600, seed: 0}",
        "model.max_length=64", "training.epochs=2", "training.lr=1e-3", "training.batch_size=32",
        "training.pos_weight=auto",
    ])
    result = train(cfg, show_progress=False)
    harm = result.test["prompt_harmful"]
    rate = harm["positives"] / harm["n"]
    assert 0.02 < rate < 0.3  # ToxicChat is imbalanced: a random ranking would score an AUPRC near this
    assert harm["auprc"] > max(0.4, 3 * rate), harm
    assert harm["roc_auc"] > 0.8, harm
