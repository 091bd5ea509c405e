#!/usr/bin/env python3
"""A model with separate query and document towers, written by sentence-transformers itself, for
tandem-text's Router test (crates/text/tests/fixtures/router).

sentence-transformers' Router.for_query_document over two copies of the tiny random BERT fixture
(crates/text/tests/fixtures/bert): the query route is the BERT, mean pooling and a seeded Dense to
16 (tanh); the document route is the same BERT with its weights moved by seeded noise (so the
towers differ), CLS pooling and another seeded Dense to 16; Normalize after the Router. Saved with
SentenceTransformer.save, then golden.safetensors holds `encode_query` and `encode_document` of
the texts in golden.json (float32, no prompts).

Run from the repository root with the bench venv: bench/.venv/bin/python bench/make_router_fixture.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Dense, Normalize, Pooling, Router, Transformer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "text" / "tests" / "fixtures"
TEXTS = [
    "protein folding",
    "Mean pooling averages the token vectors of a sentence.",
    "Café Müller naïve",
    "In 2019, 42.5% of 1,000 patients improved",
]


def main() -> None:
    torch.manual_seed(0)
    src = str(FIXTURES / "bert")
    q, d = Transformer(src, max_seq_length=64), Transformer(src, max_seq_length=64)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hidden = q.get_word_embedding_dimension()
    router = Router.for_query_document(
        query_modules=[q, Pooling(hidden, "mean"), Dense(hidden, 16, activation_function=torch.nn.Tanh())],
        document_modules=[d, Pooling(hidden, "cls"), Dense(hidden, 16, activation_function=torch.nn.Tanh())],
    )
    model = SentenceTransformer(modules=[router, Normalize()], device="cpu")
    out = FIXTURES / "router"
    if out.exists():
        shutil.rmtree(out)
    model.save(str(out))
    back = SentenceTransformer(str(out), device="cpu")
    tensors = {
        "query": back.encode_query(TEXTS, convert_to_tensor=True).float().contiguous(),
        "document": back.encode_document(TEXTS, convert_to_tensor=True).float().contiguous(),
    }
    assert not torch.allclose(tensors["query"], tensors["document"])
    safetensors.torch.save_file(tensors, str(out / "golden.safetensors"))
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    (out / "golden.json").write_text(json.dumps({"texts": TEXTS, "tensors": shapes}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
