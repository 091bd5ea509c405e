#!/usr/bin/env bash
# tandem train --task dense vs sentence-transformers' trainer (all-MiniLM-L6-v2, MNRL, batch 32,
# lr 2e-5, 10% warmup, no-duplicates batches, max length 256, CPU); see bench/dense_vs_st.py.
# Usage, from anywhere:
#   bench/dense_vs_st.sh --mode speed [--steps 12]      steps/s on MS MARCO 5k pairs, f32 and bf16
#   bench/dense_vs_st.sh --mode quality [--epochs 3]    SciFact train -> test nDCG@10, both sides
#   bench/dense_vs_st.sh --mode negatives [--epochs 3]  the same with mined / refreshed hard negatives
#   bench/dense_vs_st.sh --mode towers [--epochs 3]     the same with separate query / document towers
#   bench/dense_vs_st.sh --mode load --model RUN/model  SentenceTransformer(RUN/model) vs tandem embed
# Other flags: --threads T (default 2), --sides st,tandem, --no-build. Results also go to
# bench/out/dense_vs_st-<mode>.json. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2
build=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        --threads) threads="$2"; args+=("$1" "$2"); shift 2 ;;
        --mode|--steps|--skip|--epochs|--model|--sides)
            [ $# -ge 2 ] || { echo "bench/dense_vs_st.sh: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "bench/dense_vs_st.sh: unknown flag $1; see --help" >&2; exit 2 ;;
    esac
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bench/fetch_minilm.sh >/dev/null
if [ "$build" = 1 ]; then
    cargo build --release -p tandem
fi
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/python -c "import numpy, threadpoolctl, torch, transformers, sentence_transformers, datasets, accelerate, pytrec_eval" 2>/dev/null \
    || bench/.venv/bin/pip install --quiet torch transformers sentence-transformers datasets accelerate numpy threadpoolctl pytrec-eval-terrier
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" RAYON_NUM_THREADS="$threads"
# The reference side runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they cripple OpenBLAS);
# tandem's side does not read them.
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bench/.venv/bin/python bench/dense_vs_st.py "${args[@]}"
