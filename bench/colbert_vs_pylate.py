#!/usr/bin/env python3
"""Zero-shot nDCG@10 on SciFact of the MiniLM ColBERT (bench/make_colbert_fixtures.py) by PyLate,
exact MaxSim over every document (pylate.rank.rerank with all documents as candidates), to set
beside `tandem beir --model target/models/colbert-minilm-l6-v2 --data ../shared/data/scifact-beir`.

    PYTHONPATH=target/pylate-site bench/.venv/bin/python bench/colbert_vs_pylate.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
import json
import math
import time
from pathlib import Path

import torch
from pylate import models, scores

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "scifact-beir"
MODEL = REPO / "target" / "models" / "colbert-minilm-l6-v2"

docs = [json.loads(l) for l in open(DATA / "corpus.jsonl")]
doc_ids = [d["_id"] for d in docs]
doc_texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(DATA / "queries.jsonl")}
qrels = {}
for i, l in enumerate(open(DATA / "qrels" / "test.tsv")):
    if i == 0:
        continue
    q, d, s = l.split("\t")
    qrels.setdefault(q, {})[d] = int(s)
qids = [q for q in queries if q in qrels]
model = models.ColBERT(str(MODEL), device="cpu")
t0 = time.time()
D = model.encode(doc_texts, is_query=False, batch_size=32, show_progress_bar=True)
t1 = time.time()
Q = model.encode([queries[q] for q in qids], is_query=True, batch_size=32)
ndcg = []
for qi, q in enumerate(qids):
    qv = torch.as_tensor(Q[qi])[None]
    s = torch.tensor([scores.colbert_scores(qv, torch.as_tensor(d)[None])[0, 0].item() for d in D])
    top = torch.argsort(-s, stable=True)[:10].tolist()
    dcg = sum(qrels[q].get(doc_ids[r], 0) / math.log2(i + 2) for i, r in enumerate(top))
    ideal = sorted(qrels[q].values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    ndcg.append(dcg / idcg)
print(json.dumps({"ndcg@10": sum(ndcg) / len(ndcg), "queries": len(qids), "documents": len(docs),
                  "encode_corpus_s": t1 - t0, "total_s": time.time() - t0}))
