#!/usr/bin/env bash
# tandem embed vs sentence-transformers encode (all-MiniLM-L6-v2, CPU, max
# length 256, batch 32) on the SciFact (BEIR) and MS MARCO 5k corpora; see
# bench/embed_vs_st.py for what is measured. Usage, from anywhere:
#   bench/embed_vs_st.sh [--limit N] [--corpus scifact|msmarco|both] [--threads 2] [--no-build]
# --limit N: the first N documents of each corpus (a quick check).
# --no-build: use target/release/tandem as it is (no cargo build).
# Other flags go to bench/embed_vs_st.py (--batch, --max-length, --warmup,
# --sides, --no-probe; see its --help). Prints a table per corpus; results
# also go to bench/out/embed_vs_st.json.
# The sides run one after another, each with THREADS threads. Run it on an
# otherwise idle machine: on busy cores the figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2
build=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        --threads) threads="$2"; args+=("$1" "$2"); shift 2 ;;
        --limit|--corpus|--batch|--max-length|--warmup|--sides|--model|--bin|--out)
            [ $# -ge 2 ] || { echo "bench/embed_vs_st.sh: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); shift 2 ;;
        --no-probe) args+=("$1"); shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "bench/embed_vs_st.sh: unknown flag $1; use --limit N, --corpus scifact|msmarco|both, --threads T, --no-build" >&2; exit 2 ;;
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
bench/.venv/bin/python -c "import numpy, threadpoolctl, torch, transformers, sentence_transformers" 2>/dev/null \
    || bench/.venv/bin/pip install --quiet torch transformers sentence-transformers numpy threadpoolctl
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" RAYON_NUM_THREADS="$threads"
# The orchestrator keeps the environment as it is; it runs the Python
# reference under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (only that).
exec bench/.venv/bin/python bench/embed_vs_st.py "${args[@]}"
