#!/usr/bin/env python3
"""Golden gradients of the text-encoder fixtures, for tandem-nn's backward passes.

For every model directory that bench/make_text_fixtures.py writes under
crates/text/tests/fixtures/ (bert, roberta, xlm-roberta, mpnet, t5, t5-gated, modernbert), this
loads the model with transformers (AutoModel, T5EncoderModel for T5; attn_implementation="eager";
eval mode, so no dropout), runs the texts of the padded batch of its golden.json, and takes the
gradient of

    loss = sum over real tokens (attention_mask 1) of last_hidden_state * upstream

(each text run alone without padding: the same function of the parameters as the padded batch)

where `upstream` is a fixed N(0, 1) tensor of the output's shape (torch.Generator seeded with 0).
The model runs in float64 (`model.double()`), so the golden gradients carry no float32 rounding of
their own; they are stored as float32. Written to grads.safetensors in each model directory:

    upstream            [n, Lmax, H]  the tensor above
    loss                []            the loss (float64 run)
    grad.{name}         the gradient of every parameter that has one, under its
                        `model.named_parameters()` name (BertModel's pooler has none: it does not
                        reach last_hidden_state; tied tensors appear once, under their first name)

Run (CPU, a few seconds, no network; deterministic):

    bench/.venv/bin/python bench/make_grad_goldens.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
from pathlib import Path

import safetensors.torch
import torch
import transformers
from transformers import AutoModel, T5EncoderModel

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "text" / "tests" / "fixtures"
NAMES = ["bert", "roberta", "xlm-roberta", "mpnet", "t5", "t5-gated", "modernbert"]


def goldens(name: str) -> None:
    d = FIXTURES / name
    golden = json.loads((d / "golden.json").read_text())
    cls = T5EncoderModel if name.startswith("t5") else AutoModel
    model = cls.from_pretrained(d, attn_implementation="eager").double().eval()
    batch = golden["batch"]
    ids = torch.tensor(batch["input_ids"])
    lengths = batch["lengths"]
    types = batch.get("token_type_ids") if not name.startswith("t5") else None
    gen = torch.Generator().manual_seed(0)
    upstream = torch.randn((*ids.shape, model.config.hidden_size), generator=gen, dtype=torch.float64)
    # Each text runs alone, unpadded: the loss is the same function of the parameters as over the
    # padded batch, and no padding row can leak a NaN into it (ModernBERT's float64 eager mask
    # does: a padded query row of a local layer sees no key).
    loss = torch.zeros((), dtype=torch.float64)
    for i, n in enumerate(lengths):
        inputs = {"input_ids": ids[i : i + 1, :n], "attention_mask": torch.ones((1, n), dtype=torch.long)}
        if types is not None:
            inputs["token_type_ids"] = torch.tensor(types)[i : i + 1, :n]
        out = model(**inputs).last_hidden_state
        loss = loss + (out[0] * upstream[i, :n]).sum()
    loss.backward()
    tensors = {
        "upstream": upstream.float().contiguous(),
        "loss": loss.detach().float().reshape(()),
    }
    for pname, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{pname}"] = p.grad.float().contiguous()
    safetensors.torch.save_file(tensors, d / "grads.safetensors", metadata={"generator": "bench/make_grad_goldens.py"})
    print(f"{name}: loss {loss.item():.6f}, {len(tensors) - 2} gradients")


def main() -> None:
    torch.manual_seed(0)
    for name in NAMES:
        goldens(name)


if __name__ == "__main__":
    main()
