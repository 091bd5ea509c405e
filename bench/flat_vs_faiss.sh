#!/usr/bin/env bash
# tandem vs faiss (exact and HNSW). Usage, from anywhere:
#   bench/flat_vs_faiss.sh [--threads 2] [--reps 3] [--rows 200000] [--skip-hnsw] ...
# (all flags go to bench/flat_vs_faiss.py; see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tandem-search --example bench_search
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/python -c "import numpy, faiss, threadpoolctl" 2>/dev/null || bench/.venv/bin/pip install --quiet numpy faiss-cpu threadpoolctl
threads=2
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[$i]}" = "--threads" ]; then threads="${args[$((i + 1))]}"; fi
done
# faiss sizes its OpenMP / BLAS pools from these; the script also calls omp_set_num_threads.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed by the script for the faiss side only
# (they would pick a slower sgemm kernel than OpenBLAS's own choice for this CPU).
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
exec bench/.venv/bin/python bench/flat_vs_faiss.py "$@"
