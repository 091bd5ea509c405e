#!/usr/bin/env python3
"""tandem train --task dense vs sentence-transformers' SentenceTransformerTrainer, side by side.

The same recipe on both sides: all-MiniLM-L6-v2, MultipleNegativesRankingLoss (scale 20 =
temperature 0.05), batch 32, lr 2e-5, 10% warmup, weight decay 0.01, gradient clipping 1.0,
no-duplicates batches, max length 256, 2 threads.

Modes (--mode):
  speed    training steps/s on MS MARCO 5k (query, judged passage) pairs, --steps optimizer steps
           per side (the first --skip are not timed), float32 and bfloat16 on both sides:
           sentence-transformers with `bf16=True` (torch.autocast bfloat16 on the CPU), tandem
           with --precision bf16 (bf16 forward products, float32 backward and master weights).
  quality  the SciFact train split, --epochs epochs, then nDCG@10 / Recall@100 / MRR@10 on the
           test split (exact cosine search, pytrec_eval for sentence-transformers' side, tandem's
           trec_eval-exact evaluation for its own), float32 on both sides.
  negatives  the quality recipe with hard negatives, on SciFact: sentence-transformers'
           mine_hard_negatives (relative_margin 0.05, 1 negative, the corpus as candidates) then its
           trainer on the triplets; tandem mine with the same settings then tandem train on its
           triplets; and tandem's in-training negatives (1 per query drawn from the 10 best below
           95% of the positive's score): ranked once with the base model, and refreshed every
           epoch in the background.
  towers   the quality recipe with separate query and document towers: tandem --separate-towers
           true, and sentence-transformers' Router.for_query_document (two Transformer + mean
           Pooling routes, then Normalize) trained with router_mapping anchor->query,
           positive->document; test scores with encode_query / encode_document.
  load     loads a model tandem saved (--model DIR) with SentenceTransformer(DIR) and compares its
           embeddings of 256 texts with `tandem embed`'s: minimum cosine (must be >= 0.9999); a
           model with two towers is compared tower by tower (encode_query vs --tower query,
           encode_document vs --tower document).

The sentence-transformers side runs in this process under `env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE` (set by the orchestrator for the reference only), torch with its default
kernels (threadpoolctl prints them). Results go to bench/out/dense_vs_st.json.

Usage: bench/dense_vs_st.sh --mode speed|quality|negatives|towers|load [--steps N] [--epochs N] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
MINILM = REPO / "target" / "models" / "all-MiniLM-L6-v2"
BIN = REPO / "target" / "release" / "tandem"


def reference_env() -> dict:
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().split("\n") if l.strip()]


def beir_pairs(folder: Path, split: str) -> list[tuple[str, str]]:
    corpus = {d["_id"]: (d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"] for d in read_jsonl(folder / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    pairs = []
    for i, line in enumerate((folder / "qrels" / f"{split}.tsv").read_text().splitlines()):
        parts = line.split("\t")
        if i == 0 and not parts[-1].strip().lstrip("-").isdigit():
            continue
        if int(parts[2]) > 0:
            pairs.append((queries[parts[0]], corpus[parts[1]]))
    return sorted(pairs)


def st_towers():
    """all-MiniLM-L6-v2 as two towers: sentence-transformers' Router.for_query_document."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Router, Transformer

    def route():
        t = Transformer(str(MINILM), max_seq_length=256)
        return [t, Pooling(t.get_word_embedding_dimension(), "mean")]

    return SentenceTransformer(modules=[Router.for_query_document(route(), route()), Normalize()], device="cpu")


def st_train(pairs, steps: int | None, epochs: int, bf16: bool, threads: int, out: Path, towers: bool = False):
    """sentence-transformers' trainer (with two towers: the Router of `st_towers`, anchors routed
    to the query tower and positives to the document tower); returns (model, seconds per step)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import losses

    torch.set_num_threads(threads)
    if towers:
        model = st_towers()
    else:
        model = SentenceTransformer(str(MINILM), device="cpu")
        model.max_seq_length = 256
    columns = ["anchor", "positive", "negative"][: len(pairs[0])]
    ds = Dataset.from_dict({c: [p[i] for p in pairs] for i, c in enumerate(columns)})
    extra = {"router_mapping": {"anchor": "query", "positive": "document", "negative": "document"}} if towers else {}
    times = run_trainer(model, ds, losses.MultipleNegativesRankingLoss(model), steps, epochs, bf16, out, **extra)
    return model, times


def run_trainer(model, ds, loss, steps: int | None, epochs: int, bf16: bool, out: Path, data_collator=None, **extra) -> list[float]:
    """sentence-transformers' trainer with the recipe of this bench (batch 32, lr 2e-5, 10% warmup,
    weight decay 0.01, clipping 1.0, no-duplicates batches, seed 0, CPU); returns the seconds of
    each step."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        max_steps=steps if steps else -1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        bf16=bf16,
        use_cpu=True,
        seed=0,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        **extra,
    )
    kw = {"data_collator": data_collator} if data_collator is not None else {}
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Clock()], **kw)
    trainer.train()
    return times


def st_scores(model, folder: Path, split: str) -> dict:
    import numpy as np
    import pytrec_eval

    corpus = read_jsonl(folder / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    qrels: dict = {}
    for i, line in enumerate((folder / "qrels" / f"{split}.tsv").read_text().splitlines()):
        p = line.split("\t")
        if i == 0 and not p[-1].strip().isdigit():
            continue
        qrels.setdefault(p[0], {})[p[1]] = int(p[2])
    qids = [q for q in queries if q in qrels]
    texts = [(d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"] for d in corpus]
    d = model.encode_document(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    q = model.encode_query([queries[x] for x in qids], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    s = q @ d.T
    run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-s[i])[:100]
        run[qid] = {corpus[j]["_id"]: float(s[i, j]) for j in top}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"})
    res = ev.evaluate(run)
    mean = lambda k: float(np.mean([r[k] for r in res.values()]))
    return {"ndcg@10": mean("ndcg_cut_10"), "recall@100": mean("recall_100"), "mrr": mean("recip_rank")}


def tandem_train(data: Path, out: Path, extra: list[str], threads: int) -> list[dict]:
    cmd = [str(BIN), "train", "--task", "dense", "--model", str(MINILM), "--data", str(data), "--out", str(out), "--threads", str(threads), "--seed", "0", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def threads_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('num_threads')} threads ({i.get('architecture', '')})" for i in threadpool_info())
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["speed", "quality", "negatives", "towers", "load"], required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--sides", default="st,tandem")
    a = ap.parse_args()
    import sentence_transformers
    import torch
    import transformers

    result = {"mode": a.mode, "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__}, "threads": a.threads}
    sides = a.sides.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="dense_vs_st-"))
    if a.mode == "speed":
        folder = SHARED / "msmarco-dl-5k"
        pairs = beir_pairs(folder, "test")
        # tandem reads the same pairs as JSON lines
        jl = tmp / "pairs.jsonl"
        jl.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in pairs))
        for prec in ["f32", "bf16"]:
            if "st" in sides:
                _, times = st_train(pairs, a.steps, 1, prec == "bf16", a.threads, tmp / f"st-{prec}")
                t = times[a.skip:]
                result[f"st_{prec}_steps_per_s"] = len(t) / sum(t)
                print(f"sentence-transformers {prec}: {result[f'st_{prec}_steps_per_s']:.3f} steps/s ({threads_info()})", flush=True)
            if "tandem" in sides:
                m = tandem_train(jl, tmp / f"tandem-{prec}", ["--max-steps", str(a.steps), "--precision", prec, "--test-split", "", "--max-length", "256"], a.threads)
                train = [x for x in m if x.get("kind") == "train"]
                # steps/s of the whole run after warm-up: elapsed between the first and last train lines
                first, last = train[0], train[-1]
                rate = (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"]) if last["step"] > first["step"] else last["steps_per_s"]
                result[f"tandem_{prec}_steps_per_s"] = rate
                print(f"tandem {prec}: {rate:.3f} steps/s", flush=True)
        best_st = max(result.get("st_f32_steps_per_s", 0), result.get("st_bf16_steps_per_s", 0))
        best_t = max(result.get("tandem_f32_steps_per_s", 0), result.get("tandem_bf16_steps_per_s", 0))
        if best_st and best_t:
            result["ratio_best"] = best_t / best_st
            print(f"tandem best / sentence-transformers best: {result['ratio_best']:.2f}x")
    elif a.mode in ("quality", "towers"):
        folder = SHARED / "scifact-beir"
        towers = a.mode == "towers"
        if "st" in sides:
            pairs = beir_pairs(folder, "train")
            t0 = time.perf_counter()
            model, times = st_train(pairs, None, a.epochs, False, a.threads, tmp / "st", towers)
            result["st_train_s"] = time.perf_counter() - t0
            result["st_steps"] = len(times)
            result["st_test"] = st_scores(model, folder, "test")
            print(f"sentence-transformers: {result['st_test']} ({len(times)} steps, {result['st_train_s']:.0f} s)", flush=True)
        if "tandem" in sides:
            t0 = time.perf_counter()
            extra = ["--separate-towers", "true"] if towers else []
            m = tandem_train(folder, tmp / "tandem", ["--epochs", str(a.epochs), *extra], a.threads)
            result["tandem_train_s"] = time.perf_counter() - t0
            result["tandem_test"] = next(x for x in m if x.get("kind") == "test")
            print(f"tandem: ndcg@10 {result['tandem_test']['ndcg@10']:.4f} recall@100 {result['tandem_test']['recall@100']:.4f} ({result['tandem_train_s']:.0f} s)", flush=True)
    elif a.mode == "negatives":
        folder = SHARED / "scifact-beir"
        if "st" in sides:
            from datasets import Dataset
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.util import mine_hard_negatives

            pairs = beir_pairs(folder, "train")
            corpus = [(d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"] for d in read_jsonl(folder / "corpus.jsonl")]
            t0 = time.perf_counter()
            miner = SentenceTransformer(str(MINILM), device="cpu")
            ds = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
            mined = mine_hard_negatives(ds, miner, corpus=corpus, relative_margin=0.05, num_negatives=1, batch_size=32, output_format="triplet", verbose=False)
            result["st_mine_s"] = time.perf_counter() - t0
            triplets = [(r["anchor"], r["positive"], r["negative"]) for r in mined]
            t0 = time.perf_counter()
            model, times = st_train(triplets, None, a.epochs, False, a.threads, tmp / "st")
            result["st_mined_train_s"] = time.perf_counter() - t0
            result["st_mined_rows"] = len(triplets)
            result["st_mined_test"] = st_scores(model, folder, "test")
            print(f"sentence-transformers, mined: {result['st_mined_test']} ({len(triplets)} triplets, mining {result['st_mine_s']:.0f} s, training {result['st_mined_train_s']:.0f} s)", flush=True)
        if "tandem" in sides:
            t0 = time.perf_counter()
            jl = tmp / "mined.jsonl"
            subprocess.run([str(BIN), "mine", "--model", str(MINILM), "--data", str(folder), "--out", str(jl), "--relative-margin", "0.05", "--num-negatives", "1", "--threads", str(a.threads)], check=True, stderr=subprocess.DEVNULL)
            result["tandem_mine_s"] = time.perf_counter() - t0
            result["tandem_mined_rows"] = len(jl.read_text().splitlines())
            epoch_steps = -(-len(beir_pairs(folder, "train")) // 32)
            runs = {
                "mined": (jl, ["--eval-data", str(folder)]),
                "static": (folder, ["--curriculum", f"0-{a.epochs - 1}:1@0.0-0.95", "--mine-pool", "10"]),
                "refreshed": (folder, ["--curriculum", f"0-{a.epochs - 1}:1@0.0-0.95", "--mine-pool", "10", "--refresh-every", str(epoch_steps)]),
            }
            for name, (data, extra) in runs.items():
                t0 = time.perf_counter()
                m = tandem_train(data, tmp / f"tandem-{name}", ["--epochs", str(a.epochs), *extra], a.threads)
                result[f"tandem_{name}_train_s"] = time.perf_counter() - t0
                result[f"tandem_{name}_test"] = next(x for x in m if x.get("kind") == "test")
                t = result[f"tandem_{name}_test"]
                print(f"tandem, {name}: ndcg@10 {t['ndcg@10']:.4f} recall@100 {t['recall@100']:.4f} ({result[f'tandem_{name}_train_s']:.0f} s)", flush=True)
    else:
        import numpy as np
        from sentence_transformers import SentenceTransformer

        texts = [json.loads(l)["text"] for l in (SHARED / "reference" / "minilm-parity.jsonl").read_text().splitlines() if l.strip()]
        st = SentenceTransformer(str(a.model), device="cpu")
        inp = tmp / "texts.txt"
        inp.write_text("".join(t.replace("\n", " ") + "\n" for t in texts))
        # a model with two towers: each against its sentence-transformers route
        sides = [("query", st.encode_query), ("document", st.encode_document)] if (a.model / "router_config.json").is_file() else [(None, st.encode)]
        result["model"] = str(a.model)
        for tower, encode in sides:
            want = encode(texts, batch_size=32, convert_to_numpy=True)
            out = tmp / f"{tower or 'model'}.npy"
            cmd = [str(BIN), "embed", "--model", str(a.model), "--input", str(inp), "--out", str(out), "--dtype", "float32"]
            if tower:
                # encode_query / encode_document put the route's prompt first (may be empty)
                cmd += ["--tower", tower, "--prompt", st.prompts.get(tower, "")]
            subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            got = np.load(out)
            cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            result[f"min_cosine_{tower or 'model'}"] = float(cos.min())
            what = f"{encode.__name__} vs tandem embed --tower {tower}" if tower else "vs tandem embed"
            print(f"SentenceTransformer({a.model}) {what}: min cosine {cos.min():.7f} over {len(texts)} texts")
            if cos.min() < 0.9999:
                sys.exit(f"the saved model embeds differently in sentence-transformers (min cosine {cos.min()})")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"dense_vs_st-{a.mode}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
