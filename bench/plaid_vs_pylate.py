#!/usr/bin/env python3
"""tandem's PLAID index against PyLate's (pylate.indexes.PLAID, the fast-plaid backend) on the
SciFact corpus, over the same token vectors: the MiniLM ColBERT's (bench/make_colbert_fixtures.py)
document and query tokens embedded once by tandem (`tandem embed`, float16 documents), then

- tandem: `tandem index build` (build time) and `tandem search --index` (k = 100);
- PyLate: `indexes.PLAID(...).add_documents(...)` (build time) and `index(queries, k=100)`;
- the reference: `tandem search` without an index, exact MaxSim over every document.

Reported for each: recall@100 against the exact top 100, nDCG@10 on SciFact's test qrels (by
`tandem eval`), query latency (ms a query, all 300 queries in one call, the same number of
threads) and build time. Run it through bench/plaid_vs_pylate.sh, which builds tandem, embeds the
data and installs fast-plaid beside the PyLate install; it prints one JSON object and writes it to
bench/out/plaid_vs_pylate.json. Nothing here is hard-coded: every figure is measured.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--work", type=Path, required=True, help="folder with docs.npy and queries.npy")
ap.add_argument("--data", type=Path, required=True, help="the BEIR SciFact folder")
ap.add_argument("--tandem", type=Path, default=REPO / "target" / "release" / "tandem")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--k", type=int, default=100)
ap.add_argument("--nbits", type=int, default=4, help="tandem's residual bits")
ap.add_argument("--pylate-nbits", type=int, default=4, help="PyLate's residual bits (its default: 4)")
ap.add_argument("--reps", type=int, default=2, help="searches timed per engine (the best is kept)")
a = ap.parse_args()

os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(a.threads)

work, tandem = a.work, str(a.tandem)
out = work / "runs"
out.mkdir(exist_ok=True)


def run(*args):
    t = time.perf_counter()
    p = subprocess.run([tandem, *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"tandem {' '.join(map(str, args))} failed:\n{p.stderr}")
    return time.perf_counter() - t, p.stderr


def read_run(path):
    hits = {}
    for line in open(path):
        q, _, d, _, s, _ = line.split()
        hits.setdefault(q, []).append((d, float(s)))
    return hits


def ndcg10(path):
    rep = subprocess.run(
        [tandem, "eval", "--qrels", a.data / "qrels" / "test.tsv", "--run", path, "--metrics", "ndcg@10", "--json", "--complete"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(rep.stdout)["mean"]["ndcg@10"]


def recall(path, exact):
    got = read_run(path)
    found = sum(len({d for d, _ in exact[q]} & {d for d, _ in got.get(q, [])}) for q in exact)
    return found / sum(len(v) for v in exact.values())


docs, queries = work / "docs.npy", work / "queries.npy"
common = ["--threads", a.threads, "--k", a.k, "--bank", docs, "--queries", queries, "--force"]

# the reference: exact MaxSim
exact_run = out / "exact.trec"
run("search", *common, "--out", exact_run)
exact = read_run(exact_run)
exact_meta = json.load(open(f"{exact_run}.meta.json"))

# tandem's index
idx = work / f"tandem-plaid-{a.nbits}bit"
wall, _ = run("index", "build", "--threads", a.threads, "--nbits", a.nbits, "--bank", docs, "--out", idx, "--force")
build_meta = json.load(open(f"{idx}.meta.json"))
tandem_search = []
for r in range(a.reps):
    t_run = out / "tandem-plaid.trec"
    run("search", *common, "--index", idx, "--out", t_run)
    tandem_search.append(json.load(open(f"{t_run}.meta.json")))
t_meta = min(tandem_search, key=lambda m: m["timings_s"]["search"])
nq = t_meta["queries"]["rows"]
result = {
    "machine": {"cpu": platform.processor() or platform.machine(), "threads": a.threads, "load_before": os.getloadavg()},
    "data": {"documents": build_meta["bank"]["documents"], "tokens": build_meta["bank"]["tokens"], "dim": build_meta["bank"]["dim"], "queries": nq, "k": a.k},
    "exact_maxsim": {
        "ndcg@10": ndcg10(exact_run),
        "ms_per_query": 1000 * exact_meta["timings_s"]["search"] / nq,
    },
    "tandem": {
        "version": build_meta["tandem_version"],
        "settings": {**build_meta["params"], "centroids": build_meta["centroids"], **{k: t_meta["index"][k] for k in ["ncells", "centroid_threshold", "ndocs", "rerank"]}},
        "build_s": build_meta["timings_s"]["build"] + build_meta["timings_s"]["save"],
        "build_wall_s": wall,
        "index_bytes": build_meta["bytes"],
        "recall@100_vs_exact": recall(t_run, exact),
        "ndcg@10": ndcg10(t_run),
        "ms_per_query": 1000 * t_meta["timings_s"]["search"] / nq,
        "open_s": t_meta["timings_s"]["prepare"],
    },
}
print(json.dumps(result["tandem"], indent=1), file=sys.stderr)

# PyLate's index, over the same vectors
import fast_plaid  # noqa: E402
import pylate  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pylate import indexes  # noqa: E402

x = np.load(docs, mmap_mode="r")
off = np.load(docs.with_suffix(".offsets.npy"))
ids = [l.rstrip("\n") for l in open(docs.with_suffix(".ids.txt"))]
doc_emb = [torch.from_numpy(np.asarray(x[off[i]:off[i + 1]], dtype=np.float32)) for i in range(len(off) - 1)]
qx = np.load(queries).astype(np.float32)
qoff = np.load(queries.with_suffix(".offsets.npy"))
qids = [l.rstrip("\n") for l in open(queries.with_suffix(".ids.txt"))]
lens = set(np.diff(qoff).tolist())
assert len(lens) == 1, f"queries of several lengths {lens}"
q_emb = torch.from_numpy(qx.reshape(len(qids), lens.pop(), -1))

folder = work / "pylate-index"
settings = dict(nbits=a.pylate_nbits, kmeans_niters=4, max_points_per_centroid=256, n_ivf_probe=8, n_full_scores=8192, seed=42, device="cpu", num_threads=a.threads, use_triton=False, show_progress=False)
t = time.perf_counter()
index = indexes.PLAID(index_folder=str(folder), index_name="scifact", override=True, **settings)
index.add_documents(documents_ids=ids, documents_embeddings=doc_emb)
py_build = time.perf_counter() - t
py_times = []
for r in range(a.reps):
    t = time.perf_counter()
    res = index(q_emb, k=a.k)
    py_times.append(time.perf_counter() - t)
p_run = out / "pylate-plaid.trec"
with open(p_run, "w") as f:
    for q, hits in zip(qids, res):
        for rank, h in enumerate(hits):
            f.write(f"{q} Q0 {h['id']} {rank + 1} {h['score']} pylate\n")
size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
result["pylate"] = {
    "versions": {"pylate": pylate.__version__, "fast_plaid": version("fast-plaid"), "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    "settings": settings,
    "build_s": py_build,
    "index_bytes": size,
    "recall@100_vs_exact": recall(p_run, exact),
    "ndcg@10": ndcg10(p_run),
    "ms_per_query": 1000 * min(py_times) / len(qids),
}
result["machine"]["load_after"] = os.getloadavg()
(REPO / "bench" / "out").mkdir(exist_ok=True)
text = json.dumps(result, indent=1)
(REPO / "bench" / "out" / "plaid_vs_pylate.json").write_text(text + "\n")
print(text)
