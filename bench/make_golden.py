#!/usr/bin/env python3
"""Golden values for tandem-nn's tests, computed by PyTorch.

Writes into crates/nn/tests/data/ (override with --out):

- tower_<kind>_<residual>.safetensors for (gru, mean), (lstm, last),
  (attention, none), (mean, mean): B=3, L=4, D=6, H=A=5, projection on,
  context lengths 4, 2, 1 left-padded (pad steps zero). Tensors: `x [B,L,D]`,
  `mask [B,L]` (0/1), every parameter under its PyTorch name (random, scale
  0.5, not PyTorch's init), `g [B,D]`, the output `q [B,D]`, and the
  gradients of `loss = (q * g).sum()`: `grad.<param>` and `grad.x`.
  Metadata: kind, residual, projection, dim, hidden.
- tower_transformer_mean.safetensors: the causal transformer tower, residual
  mean, projection on, B=4, L=5, D=16, hidden=8, 2 heads, 2 layers, context
  lengths 5, 3, 1, 4; the same tensors and metadata (plus layers, heads).
- doc_linear.safetensors: the linear doc tower d = normalize(doc b + doc_b):
  `b [B,D]`, `doc.weight`, `doc.bias`, `g`, `d`, `grad.doc.weight`,
  `grad.doc.bias`, `grad.b`.
- infonce.safetensors: `q [B,D]` (unit rows), `pos [B,D]`, shared
  candidates `cand [N,D]`, `valid [B,N]` (0 = excluded for that query),
  `tau [1]`, `margin [1]`; outputs `loss [1]`, `grad.q`, `grad.pos`,
  `grad.cand`.
- adamw.safetensors: `p0 [7]`, `g1 g2 g3 [7]`, `lrs [3]`, `weight_decay [1]`
  (betas 0.9/0.999, eps 1e-8); after each torch.optim.AdamW step `p1 p2 p3`,
  and the state after the third: `exp_avg`, `exp_avg_sq`.
- schedule.json: for each case, lr, min_lr, warmup, total and `lrs[s]`, the
  learning rate LambdaLR gives optimizer step s for s = 0..=total.

Inputs are drawn as float32 from a seeded generator, everything is computed in
float64 and stored as float32 (the Rust tests compare with a tolerance of
about 1e-5). Run: bench/.venv/bin/python bench/make_golden.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_twotower import (  # noqa: E402
    DocTower,
    QueryTower,
    info_nce,
    lr_at,
    make_scheduler,
    sinusoids,
    write_safetensors,
)

B, L, D, H = 3, 4, 6, 5
LENGTHS = (4, 2, 1)
TOWERS = (("gru", "mean"), ("lstm", "last"), ("attention", "none"), ("mean", "mean"))
SEED = 20240611


@dataclass(frozen=True)
class Shape:
    """Sizes of a tower case: the context lengths give B, `layers`/`heads`
    matter to the transformer only."""

    lengths: tuple[int, ...] = LENGTHS
    seq: int = L
    dim: int = D
    hidden: int = H
    layers: int = 2
    heads: int = 2


TRANSFORMER = Shape(lengths=(5, 3, 1, 4), seq=5, dim=16, hidden=8, layers=2, heads=2)


def rand(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """float32 normal draws (so that they are exact in the stored file), widened to float64."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


def unit_rows(t: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm, rounded to float32 and widened again."""
    return torch.nn.functional.normalize(t, dim=-1).float().double()


def f32(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in tensors.items()}


def context_batch(gen: torch.Generator, shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B,L,D] with zero pad steps and mask [B,L], the shape's lengths left-padded."""
    b, l = len(shape.lengths), shape.seq
    mask = torch.zeros(b, l, dtype=torch.float64)
    for i, n in enumerate(shape.lengths):
        mask[i, l - n :] = 1.0
    return rand(gen, b, l, shape.dim) * mask.unsqueeze(-1), mask


@torch.no_grad()
def manual_tower(tower: QueryTower, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRU/LSTM tower written out step by step over the left-padded batch,
    the state left unchanged at pad steps (docs/model.md), gates r,z,n / i,f,g,o."""
    rnn = tower.gru if tower.kind == "gru" else tower.lstm
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    h = torch.zeros(x.shape[0], H, dtype=x.dtype)
    c = torch.zeros_like(h)
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if tower.kind == "gru":
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            h_new, c_new = (1 - z) * n + z * h, c
        else:
            a = gi + gh
            i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H])
            g, o = torch.tanh(a[:, 2 * H : 3 * H]), torch.sigmoid(a[:, 3 * H :])
            c_new = f * c + i * g
            h_new = o * torch.tanh(c_new)
        m = mask[:, t : t + 1]
        h, c = m * h_new + (1 - m) * h, m * c_new + (1 - m) * c
    y = tower.proj(h)
    if tower.residual == "mean":
        y = y + (mask.unsqueeze(-1) * x).sum(1) / mask.sum(1, keepdim=True)
    elif tower.residual == "last":
        y = y + x[:, -1]
    return torch.nn.functional.normalize(y, dim=-1)


@torch.no_grad()
def unpadded_transformer(tower: QueryTower, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Transformer tower run row by row on the real steps only (positions
    0..n-1, a plain causal mask, no padding anywhere), then projection,
    residual and normalisation."""
    rows = []
    for xi, mi in zip(x, mask):
        real = xi[mi > 0].unsqueeze(0)  # [1, n, D]
        n = real.shape[1]
        h = tower.tf["in"](real) + sinusoids(n, tower.hidden, x.dtype)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(n, dtype=x.dtype)
        for i in range(len(tower.tf) - 2):
            h = tower.tf[str(i)](h, src_mask=causal)
        y = tower.proj(tower.tf["norm"](h[0, -1]))
        if tower.residual == "mean":
            y = y + real[0].mean(dim=0)
        elif tower.residual == "last":
            y = y + real[0, -1]
        rows.append(torch.nn.functional.normalize(y, dim=-1))
    return torch.stack(rows)


def tower_case(kind: str, residual: str, gen: torch.Generator, shape: Shape = Shape()) -> tuple[dict, dict]:
    """Golden tensors and metadata of one query tower."""
    b, l, d = len(shape.lengths), shape.seq, shape.dim
    tower = QueryTower(kind, d, shape.hidden, True, residual, shape.layers, shape.heads).double()
    with torch.no_grad():
        for p in tower.parameters():
            p.copy_(rand(gen, *p.shape, scale=0.5))
    x, mask = context_batch(gen, shape)
    x.requires_grad_(True)
    g = rand(gen, b, d)
    q = tower(x, mask)
    (q * g).sum().backward()
    # The pad steps must not matter: garbage there gives the same output.
    noisy = x.detach() + rand(gen, b, l, d) * (1 - mask).unsqueeze(-1)
    assert torch.allclose(tower(noisy, mask), q, atol=1e-12), f"{kind}: output depends on pad steps"
    if kind in ("gru", "lstm"):
        want = manual_tower(tower, x.detach(), mask)
        assert torch.allclose(want, q, atol=1e-12), f"{kind}: packed run differs from the masked recurrence"
    if kind == "transformer":
        want = unpadded_transformer(tower, x.detach(), mask)
        assert torch.allclose(want, q, atol=1e-12), f"{kind}: padded run differs from the unpadded rows"
    out = {"x": x, "mask": mask, "g": g, "q": q, "grad.x": x.grad}
    for name, p in tower.named_parameters():
        out[name] = p
        out[f"grad.{name}"] = p.grad
    meta = {"kind": kind, "residual": residual, "projection": "true", "dim": d, "hidden": shape.hidden,
            "lengths": list(shape.lengths)}
    if kind == "transformer":
        meta.update(layers=shape.layers, heads=shape.heads)
    return out, meta


def doc_case(gen: torch.Generator) -> dict:
    """Golden tensors of the linear doc tower with random weights."""
    tower = DocTower("linear", D).double()
    with torch.no_grad():
        tower.doc.weight.copy_(rand(gen, D, D, scale=0.5))
        tower.doc.bias.copy_(rand(gen, D, scale=0.5))
    b = unit_rows(rand(gen, B, D)).requires_grad_(True)
    g = rand(gen, B, D)
    d = tower(b)
    (d * g).sum().backward()
    w, bias = tower.doc.weight, tower.doc.bias
    return {"b": b, "doc.weight": w, "doc.bias": bias, "g": g, "d": d,
            "grad.doc.weight": w.grad, "grad.doc.bias": bias.grad, "grad.b": b.grad}


def infonce_case(gen: torch.Generator) -> dict:
    """Golden InfoNCE: 5 shared candidates; query 1 excludes two, query 2 all but one."""
    n = 5
    tau, margin = 0.05, 0.1
    q = unit_rows(rand(gen, B, D)).requires_grad_(True)
    pos = unit_rows(rand(gen, B, D)).requires_grad_(True)
    cand = unit_rows(rand(gen, n, D)).requires_grad_(True)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.float64)
    loss = info_nce(q, pos, cand, valid, tau, margin)
    loss.backward()
    # Cross-check against the per-query formula of docs/model.md.
    qs, ps, cs = q.detach().numpy(), pos.detach().numpy(), cand.detach().numpy()
    want = 0.0
    for i in range(B):
        p = (qs[i] @ ps[i] - margin) / tau
        negs = [qs[i] @ cs[c] / tau for c in range(n) if valid[i, c] > 0]
        want += -p + np.log(np.exp(p) + sum(np.exp(v) for v in negs))
    assert abs(want / B - float(loss.detach())) < 1e-9
    return {"q": q, "pos": pos, "cand": cand, "valid": valid,
            "tau": torch.tensor([tau]), "margin": torch.tensor([margin]),
            "loss": loss.reshape(1), "grad.q": q.grad, "grad.pos": pos.grad, "grad.cand": cand.grad}


def adamw_case(gen: torch.Generator) -> dict:
    """Three torch.optim.AdamW steps with a different lr each."""
    wd = 0.01
    p = torch.nn.Parameter(rand(gen, 7))
    out = {"p0": p.detach().clone(), "weight_decay": torch.tensor([wd])}
    lrs = [1e-2, 5e-3, 2e-3]
    opt = torch.optim.AdamW([p], lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    for s, lr in enumerate(lrs, start=1):
        g = rand(gen, 7)
        out[f"g{s}"] = g
        opt.param_groups[0]["lr"] = lr
        p.grad = g.clone()
        opt.step()
        out[f"p{s}"] = p.detach().clone()
    st = opt.state[p]
    out.update({"lrs": torch.tensor(lrs), "exp_avg": st["exp_avg"], "exp_avg_sq": st["exp_avg_sq"]})
    return out


def schedule_case(lr: float, min_lr: float, warmup: int, total: int) -> dict:
    """The lr of every optimizer step 0..=total read from the LambdaLR."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt, lr, min_lr, warmup, total)
    lrs = []
    for s in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        assert abs(lrs[-1] - lr_at(s, lr, min_lr, warmup, total)) < 1e-15
        opt.step()
        sched.step()
    return {"lr": lr, "min_lr": min_lr, "warmup": warmup, "total": total, "lrs": lrs}


def main() -> None:
    ap = argparse.ArgumentParser(description="Write tandem-nn's golden test files.")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "nn", "tests", "data"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    meta_all = {"generator": "bench/make_golden.py", "torch": torch.__version__, "seed": str(SEED)}
    written = []

    def write_tower(kind: str, residual: str, shape: Shape = Shape()) -> None:
        tensors, meta = tower_case(kind, residual, gen, shape)
        name = f"tower_{kind}_{residual}.safetensors"
        write_safetensors(os.path.join(args.out, name), f32(tensors),
                          {**meta_all, **{k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in meta.items()}})
        written.append(name)

    for kind, residual in TOWERS:
        write_tower(kind, residual)
    for name, fn in (("doc_linear", doc_case), ("infonce", infonce_case), ("adamw", adamw_case)):
        write_safetensors(os.path.join(args.out, f"{name}.safetensors"), f32(fn(gen)), meta_all)
        written.append(f"{name}.safetensors")
    # Drawn last, so that adding it left every earlier file as it was.
    write_tower("transformer", "mean", TRANSFORMER)
    sched = {
        "generator": "bench/make_golden.py",
        "torch": torch.__version__,
        "note": "lrs[s] is the learning rate of optimizer step s (0-based), s = 0..=total",
        "cases": [schedule_case(1e-3, 1e-5, 3, 10), schedule_case(5e-4, 0.0, 0, 6)],
    }
    tmp = os.path.join(args.out, f".schedule.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(sched, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "schedule.json"))
    written.append("schedule.json")
    print(f"wrote {len(written)} files into {os.path.normpath(args.out)}: {', '.join(written)}")


if __name__ == "__main__":
    main()
