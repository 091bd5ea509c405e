#!/usr/bin/env bash
# tandem's PLAID index vs PyLate's (fast-plaid) on SciFact, the same token vectors. Usage:
#   bench/plaid_vs_pylate.sh [--threads 2] [--nbits 2] [--reps 2]   (flags go to plaid_vs_pylate.py)
# Needs target/models/colbert-minilm-l6-v2 (bench/make_colbert_fixtures.py) and PyLate 1.6 as
# that script installs it (bench/.venv + target/pylate-site). fast-plaid 1.7 is built against
# torch 2.11 exactly, while bench/.venv has a newer torch, so it goes with its own torch into
# target/fastplaid-site (first on PYTHONPATH); its CUDA runtime libraries come from bench/.venv's
# nvidia packages, plus curand, which that torch needs and the venv lacks.
# Environment: VENV (default bench/.venv), PYLATE_SITE (default target/pylate-site),
# MODEL (default target/models/colbert-minilm-l6-v2), DATA (default ../shared/data/scifact-beir).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-bench/.venv}
PYLATE_SITE=${PYLATE_SITE:-target/pylate-site}
MODEL=${MODEL:-target/models/colbert-minilm-l6-v2}
DATA=${DATA:-../shared/data/scifact-beir}
TARGET=${CARGO_TARGET_DIR:-target}
FP_SITE=$TARGET/fastplaid-site
WORK=$TARGET/bench-plaid
cargo build --release -p tandem
TANDEM=$TARGET/release/tandem
if [ ! -d "$FP_SITE/fast_plaid" ]; then
    "$VENV/bin/pip" install --quiet --no-deps --target "$FP_SITE" torch==2.11.0 fast-plaid==1.7.0.2110 \
        fastkmeans==0.5.0 usearch==2.26.6 numkong==7.8.6 joblib==1.6.0 "nvidia-curand==10.4.0.35.*"
fi
mkdir -p "$WORK"
# the test split's queries
"$VENV/bin/python" - "$DATA" "$WORK/queries.jsonl" <<'PY'
import json, sys
data, out = sys.argv[1:]
want = {l.split("\t")[0] for i, l in enumerate(open(f"{data}/qrels/test.tsv")) if i > 0}
with open(out, "w") as f:
    f.writelines(l for l in open(f"{data}/queries.jsonl") if json.loads(l)["_id"] in want)
PY
[ -f "$WORK/docs.npy" ] || "$TANDEM" embed --model "$MODEL" --input "$DATA/corpus.jsonl" --out "$WORK/docs.npy"
[ -f "$WORK/queries.npy" ] || "$TANDEM" embed --model "$MODEL" --tower query --input "$WORK/queries.jsonl" --out "$WORK/queries.npy"
PYTHONPATH="$FP_SITE:$PYLATE_SITE" exec "$VENV/bin/python" bench/plaid_vs_pylate.py \
    --work "$WORK" --data "$DATA" --tandem "$TANDEM" "$@"
