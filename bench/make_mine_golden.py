#!/usr/bin/env python3
"""Golden hard negatives from sentence-transformers' mine_hard_negatives, for `tandem mine`.

Takes the first 40 queries of SciFact's train qrels (../shared/data/scifact-beir) with their
positives, and a corpus of those positives plus the first corpus documents up to 300 texts
(`title + " " + text`, as BEIR joins them). Writes, under crates/cli/tests/fixtures/mine/:

    pairs.jsonl       {"query", "positive"} per qrels pair
    corpus.jsonl      {"text"} per document
    st_<name>.jsonl   sentence-transformers' output for each setting below, one JSON object per
                      row (columns in order; `scores` where asked)

with the real all-MiniLM-L6-v2 (target/models/all-MiniLM-L6-v2, bench/fetch_minilm.sh).
crates/cli/tests/mine.rs runs `tandem mine` with the same settings and compares.

Run (CPU, under a minute, no network; deterministic):

    bench/.venv/bin/python bench/make_mine_golden.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
from pathlib import Path

import sentence_transformers
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact-beir"
OUT = ROOT / "crates" / "cli" / "tests" / "fixtures" / "mine"

SETTINGS = {
    # NV-Retriever's TopK-PercPos with a rank window
    "relative": dict(
        range_min=2, range_max=20, relative_margin=0.05, num_negatives=3, output_format="triplet"
    ),
    # below every positive, capped score, full tuples only
    "absolute": dict(
        absolute_margin=0.0, max_score=0.6, num_negatives=4, output_format="n-tuple"
    ),
}


def main() -> None:
    torch.manual_seed(0)
    qrels = [l.rstrip("\n").split("\t") for l in open(DATA / "qrels" / "train.tsv")][1:]
    queries = {}
    for l in open(DATA / "queries.jsonl"):
        q = json.loads(l)
        queries[q["_id"]] = q["text"]
    docs = {}
    order = []
    for l in open(DATA / "corpus.jsonl"):
        d = json.loads(l)
        t = d["text"] if not d.get("title") else d["title"] + " " + d["text"]
        docs[d["_id"]] = t
        order.append(d["_id"])
    wanted = []
    for qid, _, _ in qrels:
        if qid not in wanted:
            wanted.append(qid)
    wanted = wanted[:40]
    pairs = [(queries[q], docs[d]) for q, d, s in qrels if q in wanted and int(s) > 0]
    corpus = list(dict.fromkeys([p for _, p in pairs] + [docs[i] for i in order]))[:300]
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "pairs.jsonl", "w") as f:
        for q, p in pairs:
            f.write(json.dumps({"query": q, "positive": p}) + "\n")
    with open(OUT / "corpus.jsonl", "w") as f:
        for t in corpus:
            f.write(json.dumps({"text": t}) + "\n")
    model = SentenceTransformer(str(ROOT / "target" / "models" / "all-MiniLM-L6-v2"), device="cpu")
    ds = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    for name, kw in SETTINGS.items():
        out = mine_hard_negatives(
            ds, model, corpus=corpus, output_scores=True, batch_size=32, verbose=False, **kw
        )
        with open(OUT / f"st_{name}.jsonl", "w") as f:
            for row in out:
                f.write(json.dumps(row) + "\n")
        print(name, len(out), "rows")
    print("sentence-transformers", sentence_transformers.__version__)


if __name__ == "__main__":
    main()
