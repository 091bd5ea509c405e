#!/usr/bin/env python3
"""PyTorch reference of tandem's two-tower model and training recipe.

This is the exact math of docs/model.md: the query towers (mean, attention,
GRU, LSTM, causal transformer) with optional projection and residual, the doc towers (identity,
linear), InfoNCE with temperature and margin over in-batch, mined,
memory-queue and random negatives, AdamW, warmup + cosine schedule, gradient
accumulation and clipping. It reads a tandem dataset directory
(docs/dataset-format.md) and evaluates the test split like `tandem baseline`.

Parameter names and shapes are PyTorch's and match tandem's `model.safetensors`
exactly: the query tower's tensors carry no prefix (`gru.weight_ih_l0`,
`proj.weight`, ...), the doc tower's are `doc.weight` / `doc.bias`. So

    query, doc = QueryTower("gru", 384), DocTower("linear", 384)
    load_model("run/ckpt/model.safetensors", query, doc)

evaluates a tandem model in PyTorch.

Usage (CLI flags mirror `tandem train`):

    bench/.venv/bin/python bench/torch_twotower.py --data DATASET --kind gru \
        --residual mean --epochs 8 --batch 32 --lr 5e-4 --out metrics.json

The last line printed is one JSON object with the test metrics and wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import struct
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

KINDS = ("mean", "attention", "gru", "lstm", "transformer")
RESIDUALS = ("none", "mean", "last")
DOC_KINDS = ("identity", "linear")
KS = (1, 5, 10, 50, 100, 500)
MRR_CUTOFF = 10
# Mined negatives with this cosine to the positive or more are near-duplicates.
NEAR_DUPLICATE = 0.98

# ---------------------------------------------------------------------------
# safetensors (read/write without the `safetensors` package)
# ---------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "U32": np.uint32,
    "U8": np.uint8,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as numpy arrays, and its metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for a safetensors header; is it a safetensors file?")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} runs past the end of the file; the file is truncated")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, which this reader does not support")
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=dtype)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (sorted by name, as the safetensors crate does) atomically."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        blob = arr.tobytes()
        header[name] = {
            "dtype": _ST_NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def last_real_state(rnn: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state of `rnn` (nn.GRU / nn.LSTM, batch_first) run over the
    real steps only of a left-padded batch, h_0 (= c_0) = 0.

    The real steps of row b are its last `len_b` steps; they are moved to the
    front (in order) and packed, so PyTorch runs exactly the unpadded sequence.
    """
    B, L, _ = x.shape
    lengths = mask.sum(dim=1).long()
    t = torch.arange(L, device=x.device)
    src = (t.unsqueeze(0) + (L - lengths).unsqueeze(1)) % L  # [B, L]
    shifted = torch.gather(x, 1, src.unsqueeze(-1).expand_as(x))
    packed = pack_padded_sequence(shifted, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    h_n = state[0] if isinstance(state, tuple) else state
    return h_n[-1]


def sinusoids(length: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """The standard positional encoding [length, width]: pe[p, 2j] =
    sin(p / 10000^(2j/width)), pe[p, 2j+1] = cos(the same)."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    freq = torch.pow(10000.0, -torch.arange(0, width, 2, dtype=torch.float64) / width)
    pe = torch.zeros(length, width, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.to(dtype)


def transformer_state(tf: nn.ModuleDict, heads: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The causal transformer of docs/model.md over a left-padded batch: the
    final-normed state at the last step [B, hidden].

    `tf` holds `in` (Linear(D, hidden)), the blocks `0`, `1`, ...
    (nn.TransformerEncoderLayer, pre-LN) and `norm` (LayerNorm). Positions
    count from each row's first real step (pad steps get no encoding); query
    t attends to keys s <= t that are real, a pad query to itself only (its
    output is never used, and no attention row is empty).
    """
    B, L, _ = x.shape
    start = L - mask.sum(dim=1).long()  # [B], the first real step
    t = torch.arange(L, device=x.device)
    pos = (t.unsqueeze(0) - start.unsqueeze(1)).clamp(min=0)  # [B, L]
    pe = sinusoids(L, tf["in"].out_features, x.dtype).to(x.device)
    h = tf["in"](x) + pe[pos] * mask.unsqueeze(-1)
    q, k = t.view(1, L, 1), t.view(1, 1, L)
    allowed = (k <= q) & ((k >= start.view(B, 1, 1)) | (k == q))  # [B, L, L]
    blocked = (~allowed).repeat_interleave(heads, dim=0)  # [B * heads, L, L]
    for name, block in tf.items():
        if name not in ("in", "norm"):
            h = block(h, src_mask=blocked)
    return tf["norm"](h[:, -1])


class QueryTower(nn.Module):
    """The query tower of docs/model.md: pool the context, project, add the
    residual, normalise. `forward(x [B,L,D] left-padded, mask [B,L]) -> [B,D]`."""

    def __init__(
        self,
        kind: str,
        dim: int,
        hidden: int | None = None,
        projection: bool = True,
        residual: str = "mean",
        layers: int = 2,
        heads: int = 4,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"query tower kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        if residual not in RESIDUALS:
            raise ValueError(f"residual {residual!r} is unknown; use one of {', '.join(RESIDUALS)}")
        hidden = hidden or dim
        self.kind, self.dim, self.hidden, self.residual = kind, dim, hidden, residual
        if kind == "gru":
            self.gru = nn.GRU(dim, hidden, batch_first=True)
            pooled = hidden
        elif kind == "lstm":
            self.lstm = nn.LSTM(dim, hidden, batch_first=True)
            pooled = hidden
        elif kind == "transformer":
            if hidden % 2 or hidden % heads or layers < 1:
                raise ValueError(
                    f"a transformer needs an even hidden divisible by heads and at least one layer "
                    f"(hidden {hidden}, heads {heads}, layers {layers}); change --hidden, --heads or --layers"
                )
            self.heads = heads
            blocks = {
                str(i): nn.TransformerEncoderLayer(
                    hidden, heads, 4 * hidden, dropout=0.0, activation="relu", batch_first=True, norm_first=True
                )
                for i in range(layers)
            }
            self.tf = nn.ModuleDict({"in": nn.Linear(dim, hidden), **blocks, "norm": nn.LayerNorm(hidden)})
            pooled = hidden
        elif kind == "attention":
            self.attn = nn.Linear(dim, hidden)
            self.attn_v = nn.Linear(hidden, 1, bias=False)
            pooled = dim
        else:
            pooled = dim
        if projection:
            self.proj = nn.Linear(pooled, dim)
        elif pooled != dim:
            raise ValueError(
                f"a {kind} tower with hidden {hidden} pools to {pooled} values but the output needs {dim}; "
                "keep the projection or set hidden = dim"
            )
        self.projection = projection

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(x.dtype)
        mean = (m.unsqueeze(-1) * x).sum(dim=1) / m.sum(dim=1, keepdim=True)
        if self.kind == "mean":
            h = mean
        elif self.kind == "attention":
            s = self.attn_v(torch.tanh(self.attn(x))).squeeze(-1)
            s = s.masked_fill(m == 0, float("-inf"))
            a = torch.softmax(s, dim=1)
            h = (a.unsqueeze(-1) * x).sum(dim=1)
        elif self.kind == "transformer":
            h = transformer_state(self.tf, self.heads, x, m)
        else:
            h = last_real_state(self.gru if self.kind == "gru" else self.lstm, x, m)
        y = self.proj(h) if self.projection else h
        if self.residual == "mean":
            y = y + mean
        elif self.residual == "last":
            y = y + x[:, -1]
        return F.normalize(y, dim=-1)


class DocTower(nn.Module):
    """`identity`: d = b. `linear`: d = normalize(doc b + doc_b), initialised
    to the identity and zero; its tensors are `doc.weight`, `doc.bias`."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        if kind not in DOC_KINDS:
            raise ValueError(f"doc tower kind {kind!r} is unknown; use one of {', '.join(DOC_KINDS)}")
        self.kind = kind
        if kind == "linear":
            self.doc = nn.Linear(dim, dim)
            with torch.no_grad():
                self.doc.weight.copy_(torch.eye(dim))
                self.doc.bias.zero_()

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return b
        return F.normalize(self.doc(b), dim=-1)


def load_safetensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a tandem `model.safetensors` by name (float32)."""
    tensors, _ = read_safetensors(path)
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()}


def load_model(path: str, query: QueryTower, doc: DocTower) -> None:
    """Load a tandem `model.safetensors` into `query` (unprefixed names) and
    `doc` (names `doc.*`); every tensor must be used and every parameter set."""
    tensors = load_safetensors(path)
    q = {k: v for k, v in tensors.items() if not k.startswith("doc.")}
    d = {k: v for k, v in tensors.items() if k.startswith("doc.")}
    for module, part, what in ((query, q, "query"), (doc, d, "doc")):
        missing, unexpected = module.load_state_dict(part, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: does not fit the {what} tower (missing {missing}, unexpected {unexpected}); "
                "pass the --kind/--hidden/--layers/--heads/--doc/--projection the model was trained with"
            )


# ---------------------------------------------------------------------------
# Loss and schedule
# ---------------------------------------------------------------------------


def info_nce(q, pos, cand, valid, tau: float, margin: float) -> torch.Tensor:
    """Mean InfoNCE of docs/model.md. q, pos [B,D]; cand [N,D] shared
    candidates; valid [B,N] (1 = candidate c is a negative of query i)."""
    p = ((q * pos).sum(dim=-1) - margin) / tau  # [B]
    neg = (q @ cand.T) / tau  # [B,N]
    neg = neg.masked_fill(valid == 0, float("-inf"))
    logits = torch.cat([p.unsqueeze(1), neg], dim=1)
    return (torch.logsumexp(logits, dim=1) - p).mean()


def lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based) of `total`, warmup `warmup`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, lr: float, min_lr: float, warmup: int, total: int):
    """LambdaLR giving `lr_at` (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_at(s, lr, min_lr, warmup, total) / lr if lr > 0 else 0.0
    )


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


def load_bank(path: str) -> np.ndarray:
    """A vector file (.npy memory-mapped, .npz with one array, .safetensors
    with one tensor, .fvecs) as a 2-D array."""
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if path.endswith(".npz"):
        with np.load(path) as z:
            if len(z.files) != 1:
                raise ValueError(f"{path}: holds {len(z.files)} arrays; a bank .npz must hold exactly one")
            return z[z.files[0]]
    if path.endswith(".safetensors"):
        tensors, _ = read_safetensors(path)
        if len(tensors) != 1:
            raise ValueError(f"{path}: holds {len(tensors)} tensors; a bank .safetensors must hold exactly one")
        return next(iter(tensors.values()))
    if path.endswith(".fvecs"):
        raw = np.fromfile(path, dtype=np.int32)
        d = int(raw[0])
        return raw.reshape(-1, d + 1)[:, 1:].view(np.float32)
    raise ValueError(f"{path}: unknown bank extension; use .npy, .npz, .safetensors or .fvecs")


@dataclass
class Split:
    """The examples of one split: target rows and left-padded context rows."""

    targets: np.ndarray  # [N] int64
    context: np.ndarray  # [N, L] int64, -1 = pad (left)


@dataclass
class Dataset:
    """A tandem dataset directory (docs/dataset-format.md)."""

    dir: str
    manifest: dict
    bank: np.ndarray  # [rows, dim], float16 or float32 as stored
    splits: dict[str, Split] = field(default_factory=dict)

    @property
    def context_len(self) -> int:
        return int(self.manifest["context"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def open_dataset(path: str) -> Dataset:
    """Read dataset.json, the bank and sequences.jsonl; build the examples of
    every split (for [r0..rn]: target ri, context r(max(0,i-L))..r(i-1))."""
    mpath = os.path.join(path, "dataset.json")
    if not os.path.exists(mpath):
        raise SystemExit(f"{mpath}: not found; --data must be a tandem dataset directory (tandem data ... --out DIR)")
    with open(mpath) as f:
        manifest = json.load(f)
    if manifest.get("format") != "tandem-sequences" or manifest.get("version") != 1:
        raise SystemExit(f"{mpath}: not a tandem-sequences v1 manifest; rebuild the dataset with tandem data")
    bank_path = manifest["bank"]
    if not os.path.isabs(bank_path):
        bank_path = os.path.join(path, bank_path)
    bank = load_bank(bank_path)
    if bank.shape != (manifest["rows"], manifest["dim"]):
        raise SystemExit(f"{bank_path}: shape {bank.shape} but {mpath} says ({manifest['rows']}, {manifest['dim']}); rebuild the dataset")
    L = int(manifest["context"])
    per: dict[str, tuple[list, list]] = {}
    with open(os.path.join(path, "sequences.jsonl")) as f:
        for line in f:
            seq = json.loads(line)
            rows = seq["rows"]
            tg, cx = per.setdefault(seq["split"], ([], []))
            for i in range(1, len(rows)):
                ctx = rows[max(0, i - L) : i]
                tg.append(rows[i])
                cx.append([-1] * (L - len(ctx)) + ctx)
    ds = Dataset(path, manifest, bank)
    for name, (tg, cx) in per.items():
        ds.splits[name] = Split(np.asarray(tg, dtype=np.int64), np.asarray(cx, dtype=np.int64).reshape(-1, L))
    for name, info in manifest["splits"].items():
        got = len(ds.splits[name].targets) if name in ds.splits else 0
        if got != info["examples"]:
            raise SystemExit(f"{mpath}: split {name} lists {info['examples']} examples but sequences.jsonl gives {got}; rebuild the dataset")
    return ds


def gather_context(bank: torch.Tensor, context: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """X [B,L,D] (pads zero) and mask [B,L] for context rows (-1 = pad)."""
    idx = torch.from_numpy(context)
    mask = (idx >= 0).to(bank.dtype)
    x = bank[idx.clamp(min=0)] * mask.unsqueeze(-1)
    return x, mask


# ---------------------------------------------------------------------------
# Evaluation (the semantics of `tandem baseline`)
# ---------------------------------------------------------------------------


def ranks_of_targets(scores: torch.Tensor, targets: np.ndarray, context: np.ndarray) -> np.ndarray:
    """1-based rank of each target in its row of `scores` [B, rows], context
    rows (other than the target) excluded, ties broken as trec_eval does (doc
    id = row number as a string, descending byte order first)."""
    scores = scores.clone()
    B = scores.shape[0]
    for i in range(B):
        ctx = context[i][(context[i] >= 0) & (context[i] != targets[i])]
        scores[i, torch.from_numpy(ctx)] = float("-inf")
    t = torch.from_numpy(targets)
    st = scores[torch.arange(B), t].unsqueeze(1)
    above = (scores > st).sum(dim=1).numpy()
    ranks = above + 1
    tied = (scores == st).numpy()
    for i in np.nonzero(tied.sum(axis=1) > 1)[0]:
        tid = str(int(targets[i]))
        ranks[i] += sum(1 for r in np.nonzero(tied[i])[0] if str(int(r)) > tid)
    return ranks


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """Recall@k (one relevant doc) and MRR@10, averaged."""
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in KS}
    out["MRR@10"] = float(np.mean(np.where(ranks <= MRR_CUTOFF, 1.0 / ranks, 0.0)))
    return out


@torch.no_grad()
def evaluate(query_fn, docs: torch.Tensor, bank: torch.Tensor, split: Split, batch: int = 512) -> dict[str, float]:
    """Search the whole bank (docs [rows, D]) with queries `query_fn(x, mask)`."""
    ranks = []
    for s in range(0, len(split.targets), batch):
        ctx = split.context[s : s + batch]
        x, mask = gather_context(bank, ctx)
        scores = query_fn(x, mask) @ docs.T
        ranks.append(ranks_of_targets(scores, split.targets[s : s + batch], ctx))
    return metrics_from_ranks(np.concatenate(ranks))


def mean_query(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The `tandem baseline` mean-of-context query (no renormalisation)."""
    return (mask.unsqueeze(-1) * x).sum(dim=1) / mask.sum(dim=1, keepdim=True)


# Mean-of-context figures of shared/data/README.md on scifact-abstracts (test).
SCIFACT_MEAN = {"R@10": 0.5614, "MRR@10": 0.2833}


def is_scifact(ds: Dataset) -> bool:
    """Whether `ds` is the scifact-abstracts from-sentences dataset."""
    prov = ds.manifest.get("provenance", {})
    return (
        prov.get("builder") == "from-sentences"
        and ds.manifest["rows"] == 22520
        and any("scifact-abstracts" in s for s in prov.get("sources", []))
        and ds.context_len == 8
    )


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclass
class Band:
    """Mined negatives per example and their cosine band (inclusive)."""

    count: int
    lo: float
    hi: float


def parse_curriculum(text: str) -> list[tuple[int, int, Band | None]]:
    """`none` or `first-last:none|count@lo-hi;...` (docs/curriculum.md)."""
    text = text.strip()
    if text == "none":
        return []
    phases = []
    for part in text.split(";"):
        rng, spec = part.split(":")
        a, _, b = rng.strip().partition("-")
        first, last = int(a), int(b or a)
        spec = spec.strip()
        if spec == "none":
            band = None
        else:
            count, _, cos = spec.partition("@")
            # the band `lo-hi`, where lo itself may be negative
            k = cos.index("-", 1)
            band = Band(int(count), float(cos[:k]), float(cos[k + 1 :]))
        phases.append((first, last, band))
    return phases


def band_of(phases, epoch: int) -> Band | None:
    """The band epoch `epoch` mines with, if any."""
    for first, last, band in phases:
        if first <= epoch <= last:
            return band
    return None


class Miner:
    """Exact-cosine hard negatives around each positive.

    For an example: the top `pool` bank rows by cosine to the positive's bank
    vector, the positive and the context rows excluded; then near-duplicates
    (cosine >= `dup`, default 0.98) dropped, rows with lo <= cos <= hi kept, and `count` of
    them sampled uniformly without replacement (fewer if fewer remain).
    """

    def __init__(self, bank: torch.Tensor, targets: np.ndarray, context_len: int, pool: int, dup: float = NEAR_DUPLICATE):
        unit = F.normalize(bank, dim=-1)
        uniq = np.unique(targets)
        depth = min(pool + context_len + 1, bank.shape[0])
        rows, cos = [], []
        for s in range(0, len(uniq), 1024):
            u = torch.from_numpy(uniq[s : s + 1024])
            c, r = torch.topk(unit[u] @ unit.T, depth, dim=1)
            rows.append(r.numpy())
            cos.append(c.numpy())
        self.slot = {int(t): i for i, t in enumerate(uniq)}
        self.rows = np.concatenate(rows)
        self.cos = np.concatenate(cos)
        self.pool, self.dup = pool, dup

    def mine(self, target: int, context: np.ndarray, band: Band, rng: np.random.Generator) -> np.ndarray:
        i = self.slot[target]
        rows, cos = self.rows[i], self.cos[i]
        keep = (rows != target) & ~np.isin(rows, context)
        rows, cos = rows[keep][: self.pool], cos[keep][: self.pool]
        ok = (cos < self.dup) & (cos >= band.lo) & (cos <= band.hi)
        found = rows[ok]
        if len(found) <= band.count:
            return found
        return rng.choice(found, size=band.count, replace=False)


@dataclass
class Recipe:
    """Loss hyper-parameters and negatives of one training run."""

    tau: float = 0.05
    margin: float = 0.0
    queue: int = 0
    random_negatives: int = 0


class Queue:
    """FIFO of (row, doc vector) of past positives, no gradient."""

    def __init__(self, size: int, dim: int):
        self.size = size
        self.rows = torch.empty(0, dtype=torch.long)
        self.vecs = torch.empty(0, dim)

    def push(self, rows: torch.Tensor, vecs: torch.Tensor) -> None:
        if self.size == 0:
            return
        self.rows = torch.cat([self.rows, rows])[-self.size :]
        self.vecs = torch.cat([self.vecs, vecs.detach()])[-self.size :]


def micro_batch_loss(
    query: QueryTower,
    doc: DocTower,
    bank: torch.Tensor,
    context: np.ndarray,
    targets: np.ndarray,
    mined: list[np.ndarray],
    queue: Queue,
    random_rows: torch.Tensor,
    recipe: Recipe,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of one micro-batch and its positives' doc vectors.

    Candidates (shared matrix, with a validity mask): in-batch positives,
    queue, random rows (shared), then every example's mined rows (valid for
    their own example only); any candidate whose row is the query's positive
    is invalid.
    """
    x, mask = gather_context(bank, context)
    q = query(x, mask)
    t = torch.from_numpy(targets)
    pos = doc(bank[t])
    mined_rows = torch.from_numpy(np.concatenate(mined).astype(np.int64)) if mined else torch.empty(0, dtype=torch.long)
    owner = torch.from_numpy(np.repeat(np.arange(len(mined)), [len(m) for m in mined])) if mined else torch.empty(0, dtype=torch.long)
    fresh = torch.cat([random_rows, mined_rows])
    fresh_docs = doc(bank[fresh]) if len(fresh) else pos[:0]
    cand = torch.cat([pos, queue.vecs, fresh_docs])
    cand_rows = torch.cat([t, queue.rows, fresh])
    valid = cand_rows.unsqueeze(0) != t.unsqueeze(1)
    if len(mined_rows):
        start = len(t) + len(queue.rows) + len(random_rows)
        mine_ok = owner.unsqueeze(0) == torch.arange(len(t)).unsqueeze(1)
        valid[:, start:] &= mine_ok
    return info_nce(q, pos, cand, valid, recipe.tau, recipe.margin), pos


def train(args, ds: Dataset, log=print) -> tuple[QueryTower, DocTower, dict]:
    """Train on the `train` split with the recipe of docs/model.md.

    Each epoch shuffles the examples (numpy Generator seeded with --seed) and
    takes, as `tandem train` does, floor(N / batch / accum) optimizer steps of
    `accum` full micro-batches each (the remainder is left out that epoch);
    the schedule's total is that times the epochs (capped by --max-steps,
    where training stops). Each micro-batch's loss is divided by `accum`.
    With a `val` split, every epoch end is validated and the towers returned
    are those of the epoch with the best `--best-metric` (as `tandem train`
    tests its best checkpoint); without one, the final towers. Mined
    negatives are drawn per micro-batch from the epoch's curriculum band,
    random negatives per micro-batch (uniform, with replacement, shared), and
    the micro-batch's positives enter the queue after its backward pass.
    """
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    bank = torch.from_numpy(np.asarray(ds.bank, dtype=np.float32))
    query = QueryTower(args.kind, ds.dim, args.hidden, args.projection, args.residual, args.layers, args.heads)
    doc = DocTower(args.doc, ds.dim)
    params = list(query.parameters()) + list(doc.parameters())
    tr = ds.splits["train"]
    n = len(tr.targets)
    steps_per_epoch = n // args.batch // args.accum
    if steps_per_epoch == 0:
        raise SystemExit(f"{ds.dir}: the train split has {n} examples, fewer than one optimizer step of batch {args.batch} x accum {args.accum}; lower --batch or --accum")
    micro = steps_per_epoch * args.accum
    total = steps_per_epoch * args.epochs
    if args.max_steps > 0:
        total = min(total, args.max_steps)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay) if params else None
    sched = make_scheduler(opt, args.lr, args.min_lr, args.warmup, total) if opt else None
    recipe = Recipe(args.tau, args.margin, args.queue, args.random_negatives)
    queue = Queue(args.queue, ds.dim)
    phases = parse_curriculum(args.curriculum)
    miner = Miner(bank, tr.targets, ds.context_len, args.mine_pool, args.dup_threshold) if any(b for _, _, b in phases) else None
    step = 0
    history = []
    best = None  # (val score, epoch, step, query state, doc state)
    for epoch in range(args.epochs):
        band = band_of(phases, epoch)
        order = rng.permutation(n)
        query.train(), doc.train()
        t0, loss_sum, done = time.time(), 0.0, 0
        for m in range(micro):
            if step >= total:
                break
            idx = order[m * args.batch : (m + 1) * args.batch]
            ctx, tg = tr.context[idx], tr.targets[idx]
            mined = [miner.mine(int(t), c[c >= 0], band, rng) for t, c in zip(tg, ctx)] if band else []
            rand = torch.from_numpy(rng.integers(0, bank.shape[0], size=args.random_negatives))
            loss, pos = micro_batch_loss(query, doc, bank, ctx, tg, mined, queue, rand, recipe)
            if opt:
                (loss / args.accum).backward()
            queue.push(torch.from_numpy(tg), pos)
            loss_sum += float(loss.detach())
            done += 1
            if opt and (m + 1) % args.accum == 0:
                if args.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, args.clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
        rec = {"epoch": epoch, "steps": step, "loss": loss_sum / max(1, done), "lr": opt.param_groups[0]["lr"] if opt else 0.0, "seconds": time.time() - t0}
        if "val" in ds.splits:
            rec["val"] = evaluate_model(query, doc, bank, ds.splits["val"])
            score = rec["val"][metric_key(args.best_metric)]
            if best is None or score > best[0]:
                best = (score, epoch, step, copy.deepcopy(query.state_dict()), copy.deepcopy(doc.state_dict()))
        history.append(rec)
        log(json.dumps(rec))
    if best is not None:
        query.load_state_dict(best[3])
        doc.load_state_dict(best[4])
    model_step = best[2] if best is not None else step
    return query, doc, {"steps": step, "model_step": model_step, "history": history}


def evaluate_model(query: QueryTower, doc: DocTower, bank: torch.Tensor, split: Split) -> dict[str, float]:
    """Metrics of the trained towers on `split`."""
    query.eval(), doc.eval()
    with torch.no_grad():
        docs = torch.cat([doc(bank[s : s + 8192]) for s in range(0, bank.shape[0], 8192)])
    return evaluate(query, docs, bank, split)


def parse_bool(text: str) -> bool:
    """`true` / `false` (as `tandem train --projection` takes them)."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; write true or false")


def metric_key(name: str) -> str | None:
    """`recall@10` / `R@10` -> `R@10`, `mrr@10` -> `MRR@10`; None if unknown."""
    kind, _, k = name.lower().partition("@")
    if kind in ("recall", "r") and k.isdigit() and int(k) in KS:
        return f"R@{k}"
    if kind == "mrr" and k == str(MRR_CUTOFF):
        return f"MRR@{MRR_CUTOFF}"
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="tandem dataset directory")
    p.add_argument("--kind", default="gru", choices=KINDS)
    p.add_argument("--hidden", type=int, default=0, help="H (and A); 0 = the bank's dimension")
    p.add_argument("--layers", type=int, default=2, help="transformer blocks (kind transformer)")
    p.add_argument("--heads", type=int, default=4, help="attention heads per block (kind transformer)")
    p.add_argument("--projection", type=parse_bool, default=True, help="linear projection after pooling (true/false)")
    p.add_argument("--residual", default="mean", choices=RESIDUALS)
    p.add_argument("--doc", default="identity", choices=DOC_KINDS)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=100, help="warmup optimizer steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--margin", type=float, default=0.03)
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--random-negatives", type=int, default=0)
    p.add_argument("--curriculum", default="none", help="e.g. 0-3:none;4-7:8@0.5-0.9")
    p.add_argument("--mine-pool", type=int, default=200, help="miner: nearest rows searched per positive")
    p.add_argument("--dup-threshold", type=float, default=NEAR_DUPLICATE, help="miner: cosine to the positive at or above which a row is a near-duplicate")
    p.add_argument("--best-metric", default="recall@10", help="validation metric that picks the epoch whose weights are tested")
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--clip", type=float, default=1.0, help="max global grad norm (0: off)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps; 0 = all epochs")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--load", help="evaluate this tandem model.safetensors instead of training")
    p.add_argument("--out", help="write the metrics JSON here")
    args = p.parse_args(argv)
    for name in ("epochs", "batch", "accum", "threads", "mine_pool", "layers", "heads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.hidden < 0:
        p.error("--hidden must be 0 (the bank's dimension) or more")
    if metric_key(args.best_metric) is None:
        p.error(f"--best-metric {args.best_metric!r} is unknown; use recall@K or mrr@10")
    if args.tau <= 0:
        p.error("--tau must be positive")
    try:
        parse_curriculum(args.curriculum)
    except ValueError as e:
        p.error(f"--curriculum {args.curriculum!r}: {e}; write `none` or phases such as 0-3:none;4-7:8@0.5-0.9")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    ds = open_dataset(args.data)
    bank = torch.from_numpy(np.asarray(ds.bank, dtype=np.float32))
    test = ds.splits["test"]
    baseline = evaluate(mean_query, bank, bank, test)
    print(json.dumps({"baseline": "mean", **baseline}), flush=True)
    if is_scifact(ds):
        for k, want in SCIFACT_MEAN.items():
            assert abs(baseline[k] - want) < 1e-3, f"mean baseline {k} = {baseline[k]:.4f}, shared/data/README.md says {want}"
    if args.load:
        query = QueryTower(args.kind, ds.dim, args.hidden, args.projection, args.residual, args.layers, args.heads)
        doc = DocTower(args.doc, ds.dim)
        load_model(args.load, query, doc)
        info = {"steps": 0, "model_step": 0, "history": []}
    else:
        query, doc, info = train(args, ds, log=lambda s: print(s, flush=True))
    test_metrics = evaluate_model(query, doc, bank, test)
    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "kind": "test",
        "examples": len(test.targets),
        **test_metrics,
        "baseline_mean": baseline,
        "steps": info["steps"],
        "model_step": info["model_step"],
        "wall_s": round(time.time() - t0, 2),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if args.out:
        tmp = f"{args.out}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({**result, "history": info["history"]}, f, indent=1)
        os.replace(tmp, args.out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
