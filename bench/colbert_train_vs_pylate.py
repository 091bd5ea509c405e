#!/usr/bin/env python3
"""ColBERT fine-tuning, tandem vs PyLate with the same recipe: the MiniLM ColBERT of
bench/make_colbert_fixtures.py (all-MiniLM-L6-v2 with PyLate's seeded 128-d projection, query
length 32, document length 180, expansion tokens not attended to), PyLate's CachedContrastive
(GradCache over MaxSim scores, mini-batches of 8 texts) over in-batch negatives at temperature 1,
batch 32, lr 2e-5, 10% warmup, weight decay 0.01, gradient clipping 1.0, no-duplicates batches,
2 threads, seed 0.

  quality  the SciFact train split for --epochs epochs on both sides; both saved models are
           scored by `tandem beir` (exact MaxSim, which gives PyLate's own zero-shot figure to
           every digit: bench/colbert_vs_pylate.py), and tandem's saved model is loaded by
           PyLate (its token vectors against `tandem embed`'s).
  speed    steps/s over --steps steps on the SciFact train split, f32 and bf16 on both sides
           (PyLate's bf16: the trainer's CPU autocast), every step counted on both sides.
  encode   documents/s encoding the SciFact corpus (5,183 documents, document side), f32 and
           bf16 on both sides (PyLate: model.encode at batch --batch, bf16 under torch's CPU
           autocast; tandem: `tandem embed --precision`), best of --reps.

    PYTHONPATH=target/pylate-site bench/.venv/bin/python bench/colbert_train_vs_pylate.py --mode quality --epochs 1

PyLate 1.6 needs sentence-transformers 5.3 and transformers <= 5.3: they live in
target/pylate-site (see bench/make_colbert_fixtures.py). Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

from dense_vs_st import BIN, REPO, SHARED, beir_pairs, run_trainer, threads_info  # noqa: E402

MODEL = REPO / "target" / "models" / "colbert-minilm-l6-v2"
DATA = SHARED / "scifact-beir"


def pylate_train(pairs, steps, epochs: int, bf16: bool, threads: int, out: Path):
    """PyLate's trainer (sentence-transformers', with PyLate's collator and loss); returns (model,
    seconds per step)."""
    import torch
    from datasets import Dataset
    from pylate import losses, models, utils

    torch.set_num_threads(threads)
    model = models.ColBERT(str(MODEL), device="cpu")
    ds = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    loss = losses.CachedContrastive(model=model, mini_batch_size=8)
    collator = utils.ColBERTCollator(tokenize_fn=model.tokenize)
    return model, run_trainer(model, ds, loss, steps, epochs, bf16, out, data_collator=collator)


def tandem_train(out: Path, extra: list[str], threads: int) -> list[dict]:
    cmd = [str(BIN), "train", "--task", "dense", "--model", str(MODEL), "--data", str(DATA), "--out", str(out), "--threads", str(threads), "--seed", "0", "--cache-batch", "8", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def tandem_beir(model: Path, threads: int) -> dict:
    out = subprocess.run([str(BIN), "beir", "--json", "--threads", str(threads), "--model", str(model), "--data", str(DATA), "--split", "test", "--cache", str(model) + ".cache", "--out", str(model) + ".run"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["metrics"]


def loads_in_pylate(saved: Path, threads: int) -> float:
    """The lowest cosine between PyLate's token vectors of tandem's saved model and `tandem embed`'s."""
    import numpy as np
    from pylate import models

    texts = [json.loads(l)["text"] for l, _ in zip(open(DATA / "queries.jsonl"), range(20))]
    model = models.ColBERT(str(saved), device="cpu")
    worst = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "q.jsonl"
        inp.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
        for side in ["query", "document"]:
            out = Path(tmp) / f"{side}.npy"
            cmd = [str(BIN), "embed", "--model", str(saved), "--input", str(inp), "--out", str(out), "--dtype", "float32", "--threads", str(threads)]
            if side == "query":
                cmd += ["--tower", "query"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            got, off = np.load(out), np.load(str(out)[:-4] + ".offsets.npy")
            want = model.encode(texts, is_query=side == "query", batch_size=32)
            for i, w in enumerate(want):
                g = got[off[i]:off[i + 1]]
                assert g.shape == w.shape, (side, i, g.shape, w.shape)
                cos = (g * w).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1))
                worst = min(worst, float(cos.min()))
    return worst


def best_ratio(result: dict, unit: str) -> None:
    """tandem's best precision against PyLate's best, into `result` and printed."""
    best = {side: max(result.get(f"{side}_{p}_{unit}", 0) for p in ("f32", "bf16")) for side in ("pylate", "tandem")}
    if best["pylate"] and best["tandem"]:
        result["ratio_best"] = best["tandem"] / best["pylate"]
        print(f"tandem best / PyLate best: {result['ratio_best']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quality", "speed", "encode"], required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sides", default="pylate,tandem")
    ap.add_argument("--precisions", default="f32,bf16", help="encode: the precisions to measure (bf16 alone: both sides' best)")
    a = ap.parse_args()
    import pylate
    import sentence_transformers
    import torch
    import transformers

    result = {"mode": a.mode, "threads": a.threads, "versions": {"pylate": pylate.__version__, "torch": torch.__version__, "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__}}
    print(result["versions"], threads_info(), flush=True)
    sides = a.sides.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="colbert_train-"))
    pairs = beir_pairs(DATA, "train")
    if a.mode == "speed":
        for prec in ["f32", "bf16"]:
            if "pylate" in sides:
                _, times = pylate_train(pairs, a.steps, 1, prec == "bf16", a.threads, tmp / f"pylate-{prec}")
                result[f"pylate_{prec}_steps_per_s"] = len(times) / sum(times)
                print(f"PyLate {prec}: {result[f'pylate_{prec}_steps_per_s']:.4f} steps/s", flush=True)
            if "tandem" in sides:
                m = tandem_train(tmp / f"tandem-{prec}", ["--max-steps", str(a.steps), "--precision", prec, "--test-split", ""], a.threads)
                last = [x for x in m if x.get("kind") == "train"][-1]
                rate = last["step"] / last["elapsed_s"]
                result[f"tandem_{prec}_steps_per_s"] = rate
                print(f"tandem {prec}: {rate:.4f} steps/s", flush=True)
        best_ratio(result, "steps_per_s")
    elif a.mode == "encode":
        docs = [json.loads(l) for l in open(DATA / "corpus.jsonl")]
        texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
        result["documents"] = len(texts)
        for prec in a.precisions.split(","):
            if "pylate" in sides:
                from pylate import models

                torch.set_num_threads(a.threads)
                model = models.ColBERT(str(MODEL), device="cpu")
                best = float("inf")
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"), torch.inference_mode():
                        model.encode(texts, is_query=False, batch_size=a.batch)
                    best = min(best, time.perf_counter() - t0)
                result[f"pylate_{prec}_docs_per_s"] = len(texts) / best
                print(f"PyLate {prec}: {len(texts) / best:.1f} documents/s (batch {a.batch})", flush=True)
            if "tandem" in sides:
                best = float("inf")
                for r in range(a.reps):
                    out = tmp / f"tandem-{prec}-{r}.npy"
                    t0 = time.perf_counter()
                    subprocess.run([str(BIN), "embed", "--model", str(MODEL), "--input", str(DATA / "corpus.jsonl"), "--out", str(out), "--precision", prec, "--threads", str(a.threads)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    best = min(best, time.perf_counter() - t0)
                result[f"tandem_{prec}_docs_per_s"] = len(texts) / best
                print(f"tandem {prec}: {len(texts) / best:.1f} documents/s (whole command)", flush=True)
        best_ratio(result, "docs_per_s")
    else:
        if "pylate" in sides:
            t0 = time.perf_counter()
            model, times = pylate_train(pairs, None, a.epochs, False, a.threads, tmp / "pylate")
            result["pylate_train_s"] = time.perf_counter() - t0
            result["pylate_steps"] = len(times)
            saved = tmp / "pylate-model"
            model.save_pretrained(str(saved))
            result["pylate_test_tandem_beir"] = tandem_beir(saved, a.threads)
            print(f"PyLate: {result['pylate_test_tandem_beir']} ({len(times)} steps, {result['pylate_train_s']:.0f} s)", flush=True)
        if "tandem" in sides:
            t0 = time.perf_counter()
            m = tandem_train(tmp / "tandem", ["--epochs", str(a.epochs)], a.threads)
            result["tandem_train_s"] = time.perf_counter() - t0
            result["tandem_test"] = next(x for x in m if x.get("kind") == "test")
            saved = tmp / "tandem" / "model"
            result["tandem_test_tandem_beir"] = tandem_beir(saved, a.threads)
            result["tandem_loads_in_pylate_min_cosine"] = loads_in_pylate(saved, a.threads)
            print(f"tandem: {result['tandem_test_tandem_beir']} ({result['tandem_train_s']:.0f} s); PyLate loads it: min cosine {result['tandem_loads_in_pylate_min_cosine']:.7f}", flush=True)
    out = REPO / "bench" / "out" / f"colbert_train_vs_pylate-{a.mode}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
