#!/usr/bin/env python3
"""ColBERT models in sentence-transformers v6's own multi-vector layout, and their token vectors
for tandem's parity tests.

Writes, for each fixture below, `crates/text/tests/fixtures/<name>/`: a `MultiVectorEncoder`
built the way sentence-transformers 6 documents a fresh ColBERT (`modules=[Transformer, Dense,
MultiVectorMask, Normalize]`, the prefixes as `prompts` text), `torch.manual_seed(0)` before the
projection is built, saved with `save_pretrained` (README.md model card removed); plus
golden.json / golden.safetensors.

- `colbert-st6-bert`: the tiny random BERT of crates/text/tests/fixtures/bert, `[Q] ` / `[D] `
  prompts (plain text to this tokenizer: `[`, `q`, `]`), a 32 -> 8 Dense without bias,
  query expansion `{"strategy": "fixed", "attend": false, "length": 16}` (classic ColBERT: the
  [MASK] tokens are not attended to, but scored), document_length 32, the punctuation skiplist
  on documents (words this 800-token vocabulary lacks are dropped, as MultiVectorMask does).
- `colbert-st6-modernbert`: the tiny random ModernBERT of crates/text/tests/fixtures/modernbert,
  `query: ` / `document: ` prompts, a 32 -> 12 Dense with bias, expansion
  `{"strategy": "min", "attend": true, "length": 12}` with query_length 20 (short queries padded
  to 12 with <mask>, longer ones kept up to 20), document_length 28, and the skiplist applied to
  queries too (`skiplist_tasks: ["query", "document"]`).

Goldens: the first 8 queries and the first 8 documents of ../shared/data/scifact-beir (documents as
title + " " + text) plus edge texts (empty, punctuation only, a long text). golden.safetensors
holds `query.{i}` / `document.{i}`: float32 [tokens, dim] from `model.encode_query` /
`model.encode_document(texts, batch_size=4)` (sorted into batches by length, so padding is
exercised); golden.json the texts and the ids of the scored tokens of each (the text encoded
alone, `output_value=None`, ids where the scoring mask is set).

    bench/.venv/bin/python bench/make_st6_colbert_fixture.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import shutil
import string
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "text" / "tests" / "fixtures"
BEIR = REPO.parent / "shared" / "data" / "scifact-beir"
HF_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "vocab.txt", "special_tokens_map.json"]

FIXTURE_SPECS = {
    "colbert-st6-bert": dict(
        base="bert", dim=8, bias=False,
        prompts={"query": "[Q] ", "document": "[D] "},
        transformer=dict(document_length=32,
                         query_expansion={"strategy": "fixed", "attend": False, "length": 16}),
        mask=dict(skiplist_words=list(string.punctuation)),
    ),
    "colbert-st6-modernbert": dict(
        base="modernbert", dim=12, bias=True,
        prompts={"query": "query: ", "document": "document: "},
        transformer=dict(query_length=20, document_length=28,
                         query_expansion={"strategy": "min", "attend": True, "length": 12}),
        mask=dict(skiplist_words=list(string.punctuation), skiplist_tasks=["query", "document"]),
    ),
}


def texts() -> tuple[list[str], list[str]]:
    lines = lambda p: [json.loads(l) for l in open(p, encoding="utf8")][:8]
    queries = [q["text"] for q in lines(BEIR / "queries.jsonl")]
    docs = [(d.get("title", "") + " " + d["text"]).strip() for d in lines(BEIR / "corpus.jsonl")]
    long = " ".join(docs)
    edge = ["", "?!,.;:", long]
    return queries + edge, docs + edge


def build(name: str, spec: dict, tmp: Path) -> MultiVectorEncoder:
    src = FIXTURES / spec["base"]
    base = tmp / spec["base"]
    base.mkdir()
    for f in HF_FILES:
        if (src / f).is_file():
            shutil.copy(src / f, base / f)
    transformer = Transformer(str(base), **spec["transformer"])
    torch.manual_seed(0)
    dense = Dense(transformer.get_embedding_dimension(), spec["dim"], bias=spec["bias"],
                  activation_function=torch.nn.Identity(), module_input_name="token_embeddings")
    modules = [transformer, dense, MultiVectorMask(**spec["mask"]),
               Normalize(module_input_name="token_embeddings")]
    model = MultiVectorEncoder(modules=modules, prompts=spec["prompts"], device="cpu")
    dest = FIXTURES / name
    for f in ["golden.json", "golden.safetensors"]:
        (dest / f).unlink(missing_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    model.save_pretrained(str(dest))
    (dest / "README.md").unlink(missing_ok=True)
    return MultiVectorEncoder(str(dest), device="cpu")


def golden(model: MultiVectorEncoder, out: Path) -> None:
    queries, docs = texts()
    tensors, meta = {}, {"queries": queries, "documents": docs}
    for side, items in (("query", queries), ("document", docs)):
        encode = model.encode_query if side == "query" else model.encode_document
        emb = encode(items, batch_size=4)
        ids = []
        for i, t in enumerate(items):
            feats = encode([t], output_value=None)[0]
            kept = feats["input_ids"][feats["attention_mask"].bool()]
            ids.append(kept.tolist())
            e = emb[i]
            assert e.shape[0] == len(ids[-1]), (side, i, e.shape, len(ids[-1]))
            tensors[f"{side}.{i}"] = e.float().contiguous()
        meta[f"{side}_ids"] = ids
    safetensors.torch.save_file(tensors, out / "golden.safetensors")
    (out / "golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    for name, spec in FIXTURE_SPECS.items():
        with tempfile.TemporaryDirectory() as tmp:
            model = build(name, spec, Path(tmp))
        golden(model, FIXTURES / name)
        print(FIXTURES / name)


if __name__ == "__main__":
    main()
