"""Tiny random backbones on disk, built from configs (no download): a 4-layer, 32-wide model per family, with
the bundled MiniLM tokenizer (any tokenizer will do for a random model)."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("bert", "xlm-roberta", "llama", "qwen2", "phi3", "t5", "bart")
CAUSAL = ("llama", "qwen2", "phi3")
ENCODER_DECODER = ("t5", "bart")  # 3 encoder blocks, 2 decoder blocks: the two stacks differ in depth


def tiny_config(family: str):
    from transformers import AutoConfig

    if family == "t5":
        return AutoConfig.for_model("t5", vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=3,
                                    num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=102,
                                    decoder_start_token_id=0)
    if family == "bart":
        return AutoConfig.for_model("bart", vocab_size=30522, d_model=32, encoder_layers=3, decoder_layers=2,
                                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                    decoder_ffn_dim=64, max_position_embeddings=512, pad_token_id=0,
                                    bos_token_id=101, eos_token_id=102, decoder_start_token_id=102)
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=512, pad_token_id=0)
    if family in ("llama", "qwen2", "phi3"):
        common.update(num_key_value_heads=2, bos_token_id=101, eos_token_id=102)
    return AutoConfig.for_model(family, **common)


def build(family: str, directory: Path) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from guardtune.models.backbone import resolve

    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        AutoModel.from_config(tiny_config(family)).save_pretrained(directory)
        AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2")).save_pretrained(directory)
    return directory


def family_of(hub_id: str) -> str:
    """The tiny stand-in for a real backbone named in a shipped config."""
    name = hub_id.lower()
    for key, family in (("qwen", "qwen2"), ("phi", "phi3"), ("llama", "llama"), ("smollm", "llama"), ("xlm-roberta", "xlm-roberta"),
                        ("minilm", "bert"), ("e5", "bert"), ("bert", "bert"), ("t5", "t5"),
                        ("bart", "bart")):
        if key in name:
            return family
    raise ValueError(f"no tiny stand-in for {hub_id!r}; add one to tests/tiny.py")


# ---- tiny causal LMs for generative guards --------------------------------------------------------------------

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bpe_tokenizer(vocab_size: int = 1200):
    """A small byte-level BPE tokenizer (the kind Llama 3, Qwen and Phi-4 use) with a ChatML chat template,
    trained here on guardtune's own prompt text, so decoding round-trips exactly as with the real ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from guardtune.chat_format import ChatFormat
    from guardtune.labels import LabelSpace

    fmt = ChatFormat(LabelSpace(("prompt_harmful", "response_harmful", "response_refusal"),
                                ("S1", "S2", "S10"), ("S1", "S2", "S10")))
    corpus = [fmt.system_prompt(), fmt.conversation("How do I bake bread at home?", "Mix flour, water and yeast."),
              '{"request": "harmful", "refusal": "compliant", "response": "safe"}',
              "The quick brown fox jumps over the lazy dog. How can I hurt someone? I cannot help with that."] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)


def build_causal(family: str, directory: Path) -> Path:
    """A tiny random causal LM of the family, with the BPE tokenizer above."""
    import torch
    from transformers import AutoModelForCausalLM

    if not (directory / "config.json").exists():
        tokenizer = bpe_tokenizer()
        config = tiny_config(family)
        config.update(dict(vocab_size=len(tokenizer), max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=False))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory
