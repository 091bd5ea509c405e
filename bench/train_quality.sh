#!/usr/bin/env bash
# Training quality: `tandem train` vs bench/torch_twotower.py, same recipe, on
# the scifact-abstracts next-sentence task; prints a side-by-side table of the
# test metrics (and the mean-of-context baseline). Usage, from anywhere:
#   bench/train_quality.sh [--threads 1] [--seed 42] [RECIPE FLAGS...]
# RECIPE FLAGS (--epochs, --lr, --queue, --curriculum, ...) go to both
# trainers, whose flag names are the same; they override the defaults below.
# The dataset is built into bench/out/scifact once (it refers to the shared
# vectors, ../shared/data/scifact-abstracts); runs go to bench/out/train_quality/.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/data/scifact-abstracts
if [ ! -f "$shared/sentences.jsonl" ]; then
    echo "bench/train_quality.sh: $shared/sentences.jsonl not found; this bench needs the shared data folder beside the repository" >&2
    exit 2
fi
threads=1
seed=42
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        *) extra+=("$1"); shift ;;
    esac
done
# The recipe: GRU, residual mean, hidden 384 (scifact is 384-d MiniLM).
recipe=(--kind gru --residual mean --hidden 384 --projection true --doc identity --epochs 8 --batch 32 --lr 2e-4 --min-lr 0
        --warmup 100 --weight-decay 0.01 --tau 0.05 --margin 0 --queue 0 --random-negatives 0
        --curriculum none --accum 1 --clip 1 --seed "$seed" --threads "$threads" ${extra[@]+"${extra[@]}"})

if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/python -c "import numpy, torch" 2>/dev/null || bench/.venv/bin/pip install --quiet numpy torch
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

cargo build --release -p tandem
tandem=target/release/tandem
data=bench/out/scifact
if [ ! -f "$data/dataset.json" ]; then
    mkdir -p bench/out
    "$tandem" data from-sentences --sentences "$shared/sentences.jsonl" \
        --vectors "$shared/sentences.minilm.f16.npy" --out "$data"
fi

out=bench/out/train_quality
mkdir -p "$out"
run="$out/tandem-run"
rm -rf "$run"
echo "== tandem train ${recipe[*]}"
SECONDS=0
"$tandem" train --data "$data" --out "$run" "${recipe[@]}"
tandem_wall=$SECONDS
echo "== bench/torch_twotower.py ${recipe[*]}"
bench/.venv/bin/python bench/torch_twotower.py --data "$data" --out "$out/pytorch.json" "${recipe[@]}" | tail -n 1

bench/.venv/bin/python - "$run/metrics.jsonl" "$out/pytorch.json" "$tandem_wall" <<'PY'
import json, re, sys
metrics_path, torch_path, tandem_wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
names = ["R@1", "R@5", "R@10", "R@50", "R@100", "R@500", "MRR@10"]

def canon(key):
    """R@10 / recall@10 / Recall@10 -> R@10; mrr@10 -> MRR@10."""
    m = re.fullmatch(r"(?i)(r|recall|mrr)@(\d+)", key)
    if not m:
        return None
    return ("MRR@" if m.group(1).lower() == "mrr" else "R@") + m.group(2)

def pick(obj):
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(pick(v))
        elif canon(k) and isinstance(v, (int, float)):
            out[canon(k)] = float(v)
    return out

tests = []
with open(metrics_path) as f:
    for line in f:
        rec = json.loads(line)
        if rec.get("kind") == "test":
            tests.append(rec)
if not tests:
    sys.exit(f"{metrics_path}: no line with \"kind\":\"test\"; did tandem train finish?")
tandem = pick(tests[-1])
with open(torch_path) as f:
    torch_res = json.load(f)
pytorch = pick({k: v for k, v in torch_res.items() if k not in ("baseline_mean", "history", "config")})
base = torch_res["baseline_mean"]
print()
print("| scifact test | " + " | ".join(names) + " | wall s |")
print("|---|" + "---|" * (len(names) + 1))
print("| mean of context (baseline) | " + " | ".join(f"{base[n]:.4f}" for n in names) + " | |")
print("| tandem | " + " | ".join(f"{tandem[n]:.4f}" if n in tandem else "-" for n in names) + f" | {tandem_wall:.0f} |")
print("| pytorch | " + " | ".join(f"{pytorch[n]:.4f}" for n in names) + f" | {torch_res['wall_s']:.0f} |")
PY
