"""tandem vs faiss, exact and HNSW search, on one seeded synthetic bank.

Run through bench/flat_vs_faiss.sh (it builds the tandem bench binary in
release mode and prepares bench/.venv with numpy + faiss-cpu).

Data: ROWS x DIM float32 rows with a low intrinsic dimension, like real
embeddings: a 64-d standard normal latent mapped by a fixed random 64 x DIM
matrix, plus isotropic noise (0.1 of the signal scale), L2-normalised;
queries drawn the same way. Seeded, written as .npy under bench/out/ and reused when present.

Measured, with THREADS threads for both engines:
  * exact: faiss IndexFlatIP vs tandem Flat (its default, the reduced-precision
    scan with an exact float32 rescore, and --precision f32), k = 100 and
    k = 500, queries/s: both sides time the wall clock around one search call
    over all queries with the same k and threads, best of REPS, after the same
    warm-up; the ids of every engine are compared with faiss's;
  * HNSW (M, efConstruction): faiss IndexHNSWFlat vs tandem Hnsw (usearch,
    one graph per scalar type in TANDEM_SCALARS; its hits are rescored
    exactly from the bank). The tandem graphs may take their own build
    parameters (--tandem-m, --tandem-ef-construction); faiss is then measured
    at both its own and tandem's, for a best-against-best and a
    same-parameters comparison. Build time, and queries/s and recall@100 against
    the engine's own exact result for each ef of EFS up to the first that
    reaches recall 0.99, then for the efs of a bisection between that ef and
    the one before it; the smallest ef reaching recall >= 0.99 (within 16) is
    reported for each engine. HNSW rows also carry the CPU seconds (all
    threads) of the build and of one search: on a shared machine they move
    far less than the wall time.
Everything printed comes from the measurements; results also go to
bench/out/results.json.

faiss-cpu's bundled OpenBLAS picks its sgemm kernel from OPENBLAS_CORETYPE
(and sizes blocks from OPENBLAS_L2_SIZE); machines that set them for other
tools get a slower faiss. Both are removed from this process's environment
before numpy and faiss are imported (the faiss side only: the tandem binary
gets the original environment), and the faiss version and the BLAS kernel it
runs (threadpoolctl) are printed. OpenBLAS's own choice is not always its
fastest kernel: on a CPU newer than the bundled OpenBLAS (faiss-cpu 1.15.1
bundles 0.3.15, which takes AMD Zen 5 for a "Barcelona", SSE only)
--faiss-coretype NAME (e.g. SkylakeX, Haswell) sets OPENBLAS_CORETYPE for
the faiss side, to compare against the best kernel as well.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Read by OpenBLAS when it is loaded: removed for the reference (faiss) side
# only, before numpy or faiss loads an OpenBLAS; the tandem binary gets them back.
OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SAVED = {v: os.environ.pop(v) for v in OPENBLAS_TUNING if v in os.environ}

import numpy as np  # noqa: E402

LATENT = 64
NOISE = 0.1
# The HNSW sweeps look for the smallest ef (within EF_STEP) reaching this recall@100.
TARGET_RECALL = 0.99
EF_STEP = 16


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--tandem-m", type=int, default=None, help="M of the tandem graphs (default: --m)")
    p.add_argument("--tandem-ef-construction", type=int, default=None,
                   help="efConstruction of the tandem graphs (default: --ef-construction)")
    p.add_argument("--efs", default="128,256,384,512,768,1024")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tandem-scalars", default="bf16,i8", help="element types of the tandem HNSW graphs to build (f32, f16, bf16, i8)")
    p.add_argument("--skip-hnsw", action="store_true")
    p.add_argument("--faiss-coretype", default=None,
                   help="OPENBLAS_CORETYPE for faiss's OpenBLAS (default: unset, OpenBLAS's own choice)")
    p.add_argument("--bin", default="target/release/examples/bench_search")
    p.add_argument("--out", default="bench/out")
    return p.parse_args()


def generate(a):
    os.makedirs(a.out, exist_ok=True)
    tag = f"{a.rows}x{a.dim}_q{a.queries}_s{a.seed}_l{LATENT}"
    bank_p, q_p = f"{a.out}/bank_{tag}.npy", f"{a.out}/queries_{tag}.npy"
    if not (os.path.exists(bank_p) and os.path.exists(q_p)):
        rng = np.random.default_rng(a.seed)
        mix = rng.standard_normal((LATENT, a.dim), dtype=np.float32)

        def draw(n):
            out = np.empty((n, a.dim), dtype=np.float32)
            for s in range(0, n, 50_000):
                e = min(n, s + 50_000)
                x = rng.standard_normal((e - s, LATENT), dtype=np.float32) @ mix
                x += NOISE * np.sqrt(LATENT) * rng.standard_normal((e - s, a.dim), dtype=np.float32)
                out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
            return out

        np.save(bank_p, draw(a.rows))
        np.save(q_p, draw(a.queries))
    return bank_p, q_p


def best_of(reps, f):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def recall(approx, exact):
    hit = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist()))
    return hit / exact.size


def sweep_to_target(efs, target, recall_at):
    """Measures recall_at(ef) at every ef of the sweep efs (ascending) up to the
    first that reaches target, then bisects between it and the ef before it
    down to EF_STEP: the smallest ef measured to reach target is then the
    smallest that does, within EF_STEP. The tandem bench binary does the same."""
    lo, hi = 0, None
    for ef in efs:
        if recall_at(ef) >= target:
            hi = ef
            break
        lo = ef
    while hi is not None and hi - lo > EF_STEP:
        mid = (lo + hi) // 2
        if recall_at(mid) >= target:
            hi = mid
        else:
            lo = mid


def first_reaching(rows, target):
    ok = [r for r in rows if r["recall"] >= target]
    return min(ok, key=lambda r: r["ef"]) if ok else None


def blas_info():
    """The BLAS / OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: i.get(k) for k in keys} for i in threadpool_info()]


def compare_ids(x, q, ref, path):
    """Compares an engine's ids (uint32, nq x k, written at path) with faiss's
    (ref). Returns the number of queries whose id lists are identical, and the
    largest difference, over the other queries, between the float64 scores of
    the two lists rank by rank (a near-tie swapped by float32 rounding shows
    as ~1e-7; a wrong result as much more)."""
    got = np.fromfile(path, dtype=np.uint32).reshape(ref.shape).astype(np.int64)
    same = (got == ref).all(axis=1)
    worst = 0.0
    for i in np.flatnonzero(~same):
        qi = q[i].astype(np.float64)
        a = x[got[i]].astype(np.float64) @ qi
        b = x[ref[i]].astype(np.float64) @ qi
        worst = max(worst, float(np.abs(a - b).max()))
    return int(same.sum()), worst


def main():
    a = parse()
    a.tandem_m = a.m if a.tandem_m is None else a.tandem_m
    if a.tandem_ef_construction is None:
        a.tandem_ef_construction = a.ef_construction
    # faiss's graphs: at its own parameters, and at tandem's when they differ.
    hnsw_params = list(dict.fromkeys([(a.m, a.ef_construction), (a.tandem_m, a.tandem_ef_construction)]))
    saved = SAVED
    if a.faiss_coretype:
        os.environ["OPENBLAS_CORETYPE"] = a.faiss_coretype
    import faiss  # imported after OMP_NUM_THREADS is set by the wrapper and the OpenBLAS tuning is removed

    faiss.omp_set_num_threads(a.threads)
    bank_p, q_p = generate(a)
    x, q = np.load(bank_p), np.load(q_p)
    nq = len(q)
    results = {"config": vars(a) | {"bank": bank_p, "queries": q_p, "faiss": faiss.__version__, "cpus": os.cpu_count()}}

    # faiss exact
    flat = faiss.IndexFlatIP(a.dim)
    flat.add(x)
    flat.search(q[:64], 100)  # warm-up, as the tandem binary does; loads the BLAS
    blas = blas_info()
    results["config"] |= {"numpy": np.__version__, "blas": blas, "openblas_tuning_removed": saved,
                          "faiss_coretype": a.faiss_coretype}
    print(f"faiss {faiss.__version__}, numpy {np.__version__}; removed for faiss: {saved or 'nothing'}; "
          f"OPENBLAS_CORETYPE for faiss: {a.faiss_coretype or 'unset'}", flush=True)
    for b in blas:
        print(f"  {b['internal_api']} {b['version']} kernel={b['architecture']} threads={b['num_threads']} ({b['filepath']})", flush=True)
    faiss_flat, faiss_ids = [], {}
    for k in (100, 500):
        secs, (_, ids) = best_of(a.reps, lambda: flat.search(q, k))
        faiss_flat.append({"engine": "faiss", "index": "IndexFlatIP", "k": k, "seconds": secs, "qps": nq / secs})
        faiss_ids[k] = ids
        print(json.dumps(faiss_flat[-1]), flush=True)
    exact100 = faiss_ids[100]
    del flat

    # tandem exact (+ HNSW): one process, JSON lines on stdout, the original environment
    cmd = [a.bin, bank_p, q_p, str(a.threads), "100,500", str(a.reps)]
    if not a.skip_hnsw:
        cmd += [str(a.tandem_m), str(a.tandem_ef_construction), a.efs, a.tandem_scalars]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"} | saved | {"BENCH_IDS": f"{a.out}/tandem_ids"}
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    tandem = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for t in tandem:
        if t["index"] == "flat":
            t["identical_queries"], t["max_score_gap"] = compare_ids(x, q, faiss_ids[t["k"]], t["ids"])
        print(json.dumps(t), flush=True)
    tandem_flat = [t for t in tandem if t["index"] == "flat"]
    for k in (100, 500):
        auto, f32 = (next(t for t in tandem_flat if t["k"] == k and t["precision"] == p) for p in ("auto", "f32"))
        same = (np.fromfile(auto["ids"], dtype=np.uint32) == np.fromfile(f32["ids"], dtype=np.uint32)).all()
        auto["same_ids_as_f32"] = bool(same)
        print(f"tandem k={k}: --precision auto ({auto['kernel']}) and f32 ids identical: {bool(same)}", flush=True)
    tandem_hnsw = [t for t in tandem if t["index"] == "hnsw"]

    # faiss HNSW
    faiss_hnsw = []
    for m, efc in [] if a.skip_hnsw else hnsw_params:
        h = faiss.IndexHNSWFlat(a.dim, m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = efc
        t, cpu0 = time.perf_counter(), time.process_time()
        h.add(x)
        build, build_cpu = time.perf_counter() - t, time.process_time() - cpu0

        def measure(ef):
            h.hnsw.efSearch = ef
            cpu0 = time.process_time()
            secs, (_, ids) = best_of(a.reps, lambda: h.search(q, 100))
            cpu = (time.process_time() - cpu0) / a.reps
            faiss_hnsw.append({"engine": "faiss", "index": "IndexHNSWFlat", "scalar": "f32", "m": m, "ef_construction": efc,
                               "ef": ef, "k": 100, "build_seconds": build, "build_cpu_seconds": build_cpu, "seconds": secs,
                               "cpu_seconds": cpu, "qps": nq / secs, "recall": recall(ids, exact100)})
            print(json.dumps(faiss_hnsw[-1]), flush=True)
            return faiss_hnsw[-1]["recall"]

        sweep_to_target(list(map(int, a.efs.split(","))), TARGET_RECALL, measure)
        del h

    results |= {"faiss_flat": faiss_flat, "tandem_flat": tandem_flat, "faiss_hnsw": faiss_hnsw, "tandem_hnsw": tandem_hnsw}
    with open(f"{a.out}/results.json", "w") as f:
        json.dump(results, f, indent=2)

    print(f"\n== exact search, {a.rows} x {a.dim} float32, {nq} queries, {a.threads} threads, best of {a.reps} ==")
    print(f"faiss {faiss.__version__} IndexFlatIP, BLAS " + ", ".join(f"{b['internal_api']} {b['architecture']}" for b in blas if b["user_api"] == "blas" and "faiss" in (b["filepath"] or "")))
    print(f"{'k':>5} {'faiss qps':>10} {'tandem':>22} {'qps':>9} {'ratio':>6} {'identical ids':>14}")
    for fr in faiss_flat:
        for tr in (t for t in tandem_flat if t["k"] == fr["k"]):
            ident = f"{tr['identical_queries']}/{nq}"
            print(f"{fr['k']:>5} {fr['qps']:>10.1f} {tr['precision'] + ' (' + tr['kernel'] + ')':>22} {tr['qps']:>9.1f} "
                  f"{tr['qps'] / fr['qps']:>6.2f} {ident:>14}"
                  + (f"  (others differ by f64 score <= {tr['max_score_gap']:.1e})" if tr["identical_queries"] < nq else ""))
    if not a.skip_hnsw:
        print("\n== HNSW, k 100 ==")
        print(f"{'engine':>7} {'scalar':>6} {'M':>3} {'efC':>4} {'ef':>5} {'build s':>8} {'build cpu s':>11} {'qps':>9} "
              f"{'cpu ms/query':>12} {'recall@100':>10}")
        key = lambda r: (r["m"], r["ef_construction"], r["scalar"], r["ef"])  # noqa: E731
        for r in sorted(faiss_hnsw, key=key) + sorted(tandem_hnsw, key=key):
            print(f"{r['engine']:>7} {r['scalar']:>6} {r['m']:>3} {r['ef_construction']:>4} {r['ef']:>5} {r['build_seconds']:>8.1f} "
                  f"{r['build_cpu_seconds']:>11.1f} {r['qps']:>9.1f} {1e3 * r['cpu_seconds'] / nq:>12.2f} {r['recall']:>10.4f}")
        groups = [(f"faiss f32 (M {m}, efC {efc})", [r for r in faiss_hnsw if (r["m"], r["ef_construction"]) == (m, efc)])
                  for m, efc in hnsw_params] + [
            (f"tandem {s} (M {a.tandem_m}, efC {a.tandem_ef_construction})", [r for r in tandem_hnsw if r["scalar"] == s])
            for s in a.tandem_scalars.split(",")]
        best = {}
        for name, rows in groups:
            r = first_reaching(rows, TARGET_RECALL)
            if r:
                best[name] = r
            print(f"{name}: " + (f"smallest ef with recall@100 >= {TARGET_RECALL}: {r['ef']} ({r['qps']:.1f} qps, "
                                 f"{1e3 * r['cpu_seconds'] / nq:.2f} cpu ms/query, recall {r['recall']:.4f}, "
                                 f"build {r['build_seconds']:.1f}s, {r['build_cpu_seconds']:.1f} cpu s)" if r
                                 else f"no ef in the sweep reached recall@100 >= {TARGET_RECALL}"))
        faiss_best = [(n, r) for n, r in best.items() if n.startswith("faiss")]
        tandem_best = [(n, r) for n, r in best.items() if n.startswith("tandem")]
        if faiss_best and tandem_best:
            (fn, fr), (tn, tr) = (max(g, key=lambda nr: nr[1]["qps"]) for g in (faiss_best, tandem_best))
            print(f"best against best at recall@100 >= {TARGET_RECALL}: {tn} {tr['qps']:.1f} qps vs {fn} {fr['qps']:.1f} qps: "
                  f"{tr['qps'] / fr['qps']:.2f}x (cpu ms/query {1e3 * tr['cpu_seconds'] / nq:.2f} vs {1e3 * fr['cpu_seconds'] / nq:.2f})")


if __name__ == "__main__":
    sys.exit(main())
