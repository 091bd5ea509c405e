#!/usr/bin/env bash
# Training speed: tandem vs PyTorch on the same GRU two-tower step (see
# bench/train_speed.py for the workload). Usage, from anywhere:
#   bench/train_speed.sh [--steps 100] [--threads 2] [--kind gru|lstm|attention|mean]
# Prints the tandem line, the PyTorch line, and the ratio tandem/pytorch.
# Run it on an otherwise idle machine: with 2 threads on 2 busy cores, both
# thread pools stall on each other's preemption and the figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=100
threads=2
kind=gru
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --kind) kind="$2"; shift 2 ;;
        *) echo "bench/train_speed.sh: unknown flag $1; use --steps N, --threads T, --kind K" >&2; exit 2 ;;
    esac
done
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/python -c "import numpy, torch" 2>/dev/null || bench/.venv/bin/pip install --quiet numpy torch
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" RAYON_NUM_THREADS="$threads"
cargo build --release -p tandem-nn --example bench_step
tandem_line=$(cargo run --quiet --release -p tandem-nn --example bench_step -- --steps "$steps" --threads "$threads" --kind "$kind" | tail -n 1)
torch_line=$(bench/.venv/bin/python bench/train_speed.py --steps "$steps" --threads "$threads" --kind "$kind" | tail -n 1)
echo "$tandem_line"
echo "$torch_line"
bench/.venv/bin/python - "$tandem_line" "$torch_line" <<'PY'
import json, sys
t, p = (json.loads(s) for s in sys.argv[1:3])
assert t.get("impl") == "tandem" and p.get("impl") == "pytorch", "unexpected bench output lines"
ratio = t["steps_per_s"] / p["steps_per_s"]
print(f"tandem {t['steps_per_s']:.2f} steps/s, pytorch {p['steps_per_s']:.2f} steps/s, tandem/pytorch = {ratio:.2f}x")
PY
