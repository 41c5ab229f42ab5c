"""Which parameters a method leaves trainable, said by module (a test helper, not a count)."""

from __future__ import annotations

from guardtune.models.backbone import top_stack

ADAPTER_MARKS = {"lora": "lora_", "dora": "lora_", "pissa": "lora_", "qlora": "lora_", "adalora": "lora_",
                 "ia3": "ia3_", "vera": "vera_", "loha": "hada_", "lokr": "lokr_"}


def check_trainable(model, method: str, params) -> None:
    """full: the whole backbone; freeze: exactly the top k blocks of the stack nearest the output; PEFT: only the
    method's own adapter tensors. The head (a classifier's) is always trainable."""
    backbone = model.backbone
    names = [n for n, p in backbone.named_parameters() if p.requires_grad]
    if getattr(model, "head", None) is not None:
        assert all(p.requires_grad for p in model.head.parameters()), "the head must train"
    if method == "full":
        assert all(p.requires_grad for p in backbone.parameters()), "full leaves backbone tensors frozen"
    elif method == "freeze":
        prefix, layers = top_stack(backbone)
        top = tuple(f"{prefix}.{i}." for i in range(len(layers) - params.top_k, len(layers)))
        assert names and all(n.startswith(top) for n in names), f"trainable outside the top blocks: {names[:3]}"
        assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith(top))
    else:
        mark = ADAPTER_MARKS[method]
        assert names and all(mark in n for n in names), f"{method}: trainable tensors that are not its adapter"
