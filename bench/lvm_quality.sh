#!/usr/bin/env bash
# Next-vector models and the dual-path decoder on the scifact-abstracts
# next-sentence task: trains a GRU, an LSTM and a transformer LVM
# (`tandem lvm train`) and a GRU two-tower retriever (`tandem train`), then
# evaluates the decoder teacher-forced on the test split (`tandem generate
# --eval`, lane neutral, with the threshold sweep), candidates from the bank
# searched with the proposal and, for the GRU LVM, from the retriever.
# Prints one table. Usage, from anywhere:
#   bench/lvm_quality.sh [--threads 2] [--epochs 8]
# Runs go to bench/out/lvm_quality/; the dataset is bench/out/scifact (built
# with its texts.jsonl when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/data/scifact-abstracts
if [ ! -f "$shared/sentences.jsonl" ]; then
    echo "bench/lvm_quality.sh: $shared/sentences.jsonl not found; this bench needs the shared data folder beside the repository" >&2
    exit 2
fi
threads=2
epochs=8
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
cargo build --release -p tandem
tandem=target/release/tandem
data=bench/out/scifact
if [ ! -f "$data/texts.jsonl" ]; then
    "$tandem" data from-sentences --sentences "$shared/sentences.jsonl" \
        --vectors "$shared/sentences.minilm.f16.npy" --out "$data" --force
fi
out=bench/out/lvm_quality
mkdir -p "$out"
common=(--data "$data" --hidden 384 --epochs "$epochs" --threads "$threads" --seed 42 --force)
for kind in gru lstm transformer; do
    echo "== tandem lvm train --kind $kind"
    SECONDS=0
    "$tandem" lvm train --kind "$kind" --lr 1e-3 --out "$out/lvm-$kind" "${common[@]}" > "$out/lvm-$kind.log" 2>&1
    echo "$SECONDS" > "$out/lvm-$kind.seconds"
done
echo "== tandem train (GRU retriever)"
"$tandem" train --kind gru --lr 2e-4 --min-lr 0 --margin 0 --out "$out/retriever" "${common[@]}" > "$out/retriever.log" 2>&1
for kind in gru lstm transformer; do
    echo "== tandem generate --eval --lvm lvm-$kind"
    "$tandem" generate --eval --lvm "$out/lvm-$kind" --data "$data" --out "$out/eval-$kind" --force > /dev/null
done
echo "== tandem generate --eval --lvm lvm-gru --retriever retriever"
"$tandem" generate --eval --lvm "$out/lvm-gru" --retriever "$out/retriever" --data "$data" --out "$out/eval-gru-retriever" --force > /dev/null

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def test_metrics(run):
    last = None
    for line in open(os.path.join(run, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("kind") == "test":
            last = r
    return last
def baselines(run):
    b = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("kind") == "baseline" and r.get("split") == "test":
            b[r["query"]] = r
    return b
print("\n### LVMs, test split (prediction used as the query, context rows excluded)\n")
print("| model | cosine to true next | Hit@1 | Hit@5 | Hit@10 | MRR@10 | train s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for kind in ["gru", "lstm", "transformer"]:
    m = test_metrics(f"{out}/lvm-{kind}")
    secs = open(f"{out}/lvm-{kind}.seconds").read().strip()
    print(f"| {kind} LVM | {m['cosine']:.4f} | {m['hit@1']:.4f} | {m['hit@5']:.4f} | {m['hit@10']:.4f} | {m['mrr@10']:.4f} | {secs} |")
for name, b in baselines(f"{out}/lvm-gru").items():
    print(f"| {name} of context (baseline) | {b['cosine']:.4f} | {b['hit@1']:.4f} | {b['hit@5']:.4f} | {b['hit@10']:.4f} | {b['mrr@10']:.4f} | |")
print("\n### Decoder, lane neutral (snap 0.92 / novel 0.85), teacher-forced on the test split\n")
print("| LVM | candidates | SNAP % | BLEND % | NOVEL % | cosine to true next | Hit@5 | LVM alone Hit@5 | retrieval alone Hit@5 | best sweep Hit@5 (snap/novel) | best sweep cosine (snap/novel) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
for kind, cands, d in [("gru", "bank", "eval-gru"), ("lstm", "bank", "eval-lstm"), ("transformer", "bank", "eval-transformer"), ("gru", "GRU retriever", "eval-gru-retriever")]:
    e = json.load(open(f"{out}/{d}/eval.json"))
    s = e["lane"]; n = s["all"]["n"]
    pct = lambda t: 100.0 * s[t]["n"] / n
    bh = max(e["sweep"], key=lambda r: r["summary"]["all"]["hit"])
    bc = max(e["sweep"], key=lambda r: r["summary"]["all"]["cos_true"])
    print(f"| {kind} | {cands} | {pct('snap'):.1f} | {pct('blend'):.1f} | {pct('novel'):.1f} | {s['all']['cos_true']:.4f} | {s['all']['hit']:.4f} | {e['lvm_alone']['hit']:.4f} | {e['retrieval_alone']['hit']:.4f} | {bh['summary']['all']['hit']:.4f} ({bh['snap']:.2f}/{bh['novel']:.2f}) | {bc['summary']['all']['cos_true']:.4f} ({bc['snap']:.2f}/{bc['novel']:.2f}) |")
PY
