#!/usr/bin/env python3
"""Training steps per second of the two-tower model (GRU by default) in PyTorch.

The workload `bench/train_speed.sh` compares with tandem's
`cargo run --release -p tandem-nn --example bench_step`: batch 32, context
L = 8 (all steps real), D = 768, GRU hidden 768, projection, residual mean,
identity doc tower, InfoNCE (tau 0.05) over the in-batch positives plus 512
random bank rows shared by the batch, AdamW (weight decay 0.01), warmup +
cosine schedule, gradient clipping at norm 1. The bank is 20,000 x 768
float32 unit rows from a seeded generator; contexts and positives are random
bank rows. One step = forward, backward, clip, AdamW, schedule. After 5
warm-up steps, N steps are timed; the one line printed is

    {"impl":"pytorch","steps_per_s":...,...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_twotower import KINDS, DocTower, QueryTower, Queue, Recipe, make_scheduler, micro_batch_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kind", default="gru", choices=KINDS, help="query tower")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--rows", type=int, default=20_000, help="bank rows")
    ap.add_argument("--negatives", type=int, default=512, help="random shared negatives per step")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1 or args.threads < 1:
        ap.error("--steps and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    bank_np = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    bank_np /= np.linalg.norm(bank_np, axis=1, keepdims=True)
    bank = torch.from_numpy(bank_np)

    query = QueryTower(args.kind, args.dim, args.hidden, projection=True, residual="mean")
    doc = DocTower("identity", args.dim)
    params = list(query.parameters())
    lr, total = 5e-4, args.warmup_steps + args.steps
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    sched = make_scheduler(opt, lr, 0.0, 10, total)
    recipe = Recipe(tau=0.05, margin=0.0, queue=0, random_negatives=args.negatives)
    queue = Queue(0, args.dim)

    def step() -> float:
        context = rng.integers(0, args.rows, size=(args.batch, args.context))
        targets = rng.integers(0, args.rows, size=args.batch)
        rand = torch.from_numpy(rng.integers(0, args.rows, size=args.negatives))
        loss, _ = micro_batch_loss(query, doc, bank, context, targets, [], queue, rand, recipe)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup_steps):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    secs = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch",
        "steps_per_s": round(args.steps / secs, 3),
        "ms_per_step": round(1000 * secs / args.steps, 3),
        "steps": args.steps,
        "kind": args.kind,
        "threads": args.threads,
        "batch": args.batch, "context": args.context, "dim": args.dim, "hidden": args.hidden,
        "negatives": args.negatives, "rows": args.rows,
        "last_loss": round(loss, 4),
        "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
