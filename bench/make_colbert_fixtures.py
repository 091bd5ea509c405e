#!/usr/bin/env python3
"""ColBERT models built with PyLate, and PyLate's token vectors for tandem's parity tests.

Writes:

    crates/text/tests/fixtures/colbert-modernbert/   a PyLate ColBERT over the tiny random ModernBERT of
        crates/text/tests/fixtures/modernbert/ (its config.json, model.safetensors, tokenizer files),
        `torch.manual_seed(0)` before `pylate.models.ColBERT(dir, embedding_size=16,
        query_length=24, document_length=40, attend_to_expansion_tokens=True)`, saved with
        `model.save` (README.md model card removed); plus golden.json / golden.safetensors.
    target/models/colbert-minilm-l6-v2/               (not committed: 90 MB) a PyLate ColBERT over the
        transformer of all-MiniLM-L6-v2 ($TANDEM_MODELS or target/models), `torch.manual_seed(0)`
        before `ColBERT(dir)` (PyLate's defaults: 128-d projection without bias, [Q] / [D] prefixes
        added as tokens, query_length 32 with [MASK] expansion not attended to, document_length
        180, punctuation skiplist).
    crates/text/tests/fixtures/colbert-minilm/        golden.json / golden.safetensors of that model,
        and overlay/: every file of that model but its weights, and added_rows.safetensors (the
        word-embedding rows PyLate adds for [Q] / [D]; every other tensor is all-MiniLM-L6-v2's, bit
        for bit, which the script checks). The test rebuilds the model from the real MiniLM and
        the overlay, so CI checks PyLate's defaults too.

Goldens: the first 8 queries and the first 8 documents of ../shared/data/scifact-beir (documents as
title + " " + text, as tandem's Corpus reads them) plus edge texts (empty, punctuation only, a long
text). golden.safetensors holds `query.{i}` / `document.{i}`: float32 [tokens, dim] from
`model.encode(texts, is_query=..., batch_size=4)` (sorted into batches by PyLate, so padding is
exercised); golden.json the texts and the kept token ids of each (PyLate's `tokenize` of the text
alone, expansion included, skiplist removed for documents).

PyLate 1.6 needs sentence-transformers 5.3 and transformers <= 5.3, which bench/.venv does not have
(it has sentence-transformers 6.2, transformers 5.24); they go to target/pylate-site without
touching the venv:

    bench/.venv/bin/pip install pylate --no-deps
    bench/.venv/bin/pip install --no-deps --target target/pylate-site sentence-transformers==5.3.0 \\
        transformers==5.3.0 tokenizers==0.22.2 "huggingface-hub==1.3.*" datasets==4.4.1
    bench/.venv/bin/pip install --target target/pylate-site httpx requests ujson
    PYTHONPATH=target/pylate-site bench/.venv/bin/python bench/make_colbert_fixtures.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import shutil
import sys
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from pylate import models

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "text" / "tests" / "fixtures"
BEIR = REPO.parent / "shared" / "data" / "scifact-beir"
MODELS = Path(os.environ.get("TANDEM_MODELS", REPO / "target" / "models"))
HF_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "vocab.txt", "special_tokens_map.json"]


def texts() -> tuple[list[str], list[str]]:
    lines = lambda p: [json.loads(l) for l in open(p, encoding="utf8")][:8]
    queries = [q["text"] for q in lines(BEIR / "queries.jsonl")]
    docs = [(d.get("title", "") + " " + d["text"]).strip() for d in lines(BEIR / "corpus.jsonl")]
    long = " ".join(docs)
    edge = ["", "?!,.;:", long]
    return queries + edge, docs + edge


def base_dir(src: Path, tmp: Path) -> Path:
    """The transformer alone (PyLate builds a ColBERT from a plain Hugging Face directory)."""
    out = tmp / src.name
    out.mkdir()
    for f in HF_FILES:
        if (src / f).is_file():
            shutil.copy(src / f, out / f)
    return out


def golden(model: models.ColBERT, out: Path) -> None:
    queries, docs = texts()
    tensors, meta = {}, {"queries": queries, "documents": docs}
    for side, items, is_query in (("query", queries, True), ("document", docs, False)):
        emb = model.encode(items, is_query=is_query, batch_size=4, convert_to_numpy=False,
                           convert_to_tensor=False)
        ids = []
        for i, t in enumerate(items):
            tok = model.tokenize([t], is_query=is_query)["input_ids"][0]
            if not is_query:
                tok = tok[model.skiplist_mask(tok[None], model.skiplist)[0]]
            ids.append(tok.tolist())
            e = emb[i]
            assert e.shape[0] == len(ids[-1]), (side, i, e.shape, len(ids[-1]))
            tensors[f"{side}.{i}"] = e.float().contiguous()
        meta[f"{side}_ids"] = ids
    out.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, out / "golden.safetensors")
    (out / "golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def build(src: Path, dest: Path, **kw) -> models.ColBERT:
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = models.ColBERT(str(base_dir(src, Path(tmp))), device="cpu", **kw)
        model.eval()
        shutil.rmtree(dest, ignore_errors=True)
        model.save(str(dest))
    (dest / "README.md").unlink(missing_ok=True)
    return models.ColBERT(str(dest), device="cpu")


def overlay(model_dir: Path, minilm: Path, out: Path) -> None:
    """The files that turn all-MiniLM-L6-v2 into `model_dir` (see the module docstring)."""
    from safetensors.numpy import load_file, save_file
    import numpy as np

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    shutil.copy(model_dir / "1_Dense" / "model.safetensors", out / "1_Dense" / "model.safetensors")
    new, base = load_file(str(model_dir / "model.safetensors")), load_file(str(minilm / "model.safetensors"))
    legacy = lambda n: n.replace(".gamma", ".weight").replace(".beta", ".bias")
    base = {legacy(k): v for k, v in base.items()}
    word = "embeddings.word_embeddings.weight"
    for k, v in new.items():
        k = legacy(k)
        if k != word:
            assert np.array_equal(v, base[k]), k
    rows = base[word].shape[0]
    assert np.array_equal(new[word][:rows], base[word])
    save_file({"rows": np.ascontiguousarray(new[word][rows:])}, str(out / "added_rows.safetensors"))


def main() -> None:
    mb = FIXTURES / "colbert-modernbert"
    model = build(FIXTURES / "modernbert", mb, embedding_size=16, query_length=24,
                  document_length=40, attend_to_expansion_tokens=True)
    golden(model, mb)
    minilm = MODELS / "all-MiniLM-L6-v2"
    if not minilm.is_dir():
        sys.exit(f"{minilm}: missing; run bench/fetch_minilm.sh (or set TANDEM_MODELS)")
    dest = REPO / "target" / "models" / "colbert-minilm-l6-v2"
    model = build(minilm, dest)
    golden(model, FIXTURES / "colbert-minilm")
    overlay(dest, minilm, FIXTURES / "colbert-minilm" / "overlay")
    print(mb, dest, FIXTURES / "colbert-minilm")


if __name__ == "__main__":
    main()
