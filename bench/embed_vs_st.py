"""tandem embed vs sentence-transformers encode, all-MiniLM-L6-v2, on CPU.

Run through bench/embed_vs_st.sh (it fetches the model, builds tandem in
release mode and prepares bench/.venv), or directly:
  bench/.venv/bin/python bench/embed_vs_st.py [--limit N] [--corpus both]

Corpora (JSON lines, BEIR layout; text = (title + " " + text).strip(), as
BEIR / sentence-transformers do and as `tandem embed --field text` does):
  scifact: ../shared/data/scifact-beir/corpus.jsonl (5,183 docs)
  msmarco: ../shared/data/msmarco-dl-5k/corpus.jsonl (5,000 passages)
With --limit N both sides read the same file of the first N documents.

Sides, run one after another (never concurrently), each in its own process,
THREADS threads, batch BATCH, max length MAX_LENGTH tokens:
  st-f32           SentenceTransformer(dir, device="cpu"), max_seq_length set,
                   torch.set_num_threads, encode(texts, batch_size,
                   convert_to_numpy=True); normalisation is the model's
                   2_Normalize module.
  st-bf16-autocast the same inside torch.autocast("cpu", dtype=torch.bfloat16)
  st-bf16-weights  the same after model.bfloat16() (weights in bfloat16)
  tandem-f32       tandem embed --precision f32
  tandem-bf16      tandem embed --precision bf16
Encode rate: texts / wall-clock seconds of the encoding only, the model loaded
(sentence-transformers: after a warm-up encode of the first WARMUP texts;
tandem: the sidecar's texts_per_second, measured after loading, which
includes tokenisation as encode does, without a warm-up). Whole process:
wall seconds from spawn to exit and peak RSS (getrusage of that child, as
/usr/bin/time %M reports it).

The reference processes run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset
(`env -u`), which some machines here set and which cripple numpy's OpenBLAS;
their threadpoolctl.threadpool_info() and torch's MKL / oneDNN build lines
are printed and recorded. A separate small probe runs one forward of each
sentence-transformers mode with oneDNN verbose on, to record which oneDNN
primitives (and data types / ISA) serve the matrix products.

Quality: per-row cosine (min, mean) of tandem f32 vs ST f32 (goal min >=
0.9999), tandem bf16 vs tandem f32 (goal min >= 0.999), ST bf16 vs ST f32
(reference). Speed goal: tandem's best / sentence-transformers' best >= 1.5.
Results: a table per corpus on stdout and bench/out/embed_vs_st.json.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

CORPORA = {
    "scifact": "../shared/data/scifact-beir/corpus.jsonl",
    "msmarco": "../shared/data/msmarco-dl-5k/corpus.jsonl",
}
ST_MODES = ("st-f32", "st-bf16-autocast", "st-bf16-weights")
TANDEM_MODES = ("tandem-f32", "tandem-bf16")
ALL_SIDES = ST_MODES + TANDEM_MODES
# the Python reference runs without these (they cripple numpy's OpenBLAS)
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GOAL_RATIO = 1.5
GOAL_F32 = 0.9999
GOAL_BF16 = 0.999


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    # the default command: the whole benchmark
    p.add_argument("--corpus", choices=["scifact", "msmarco", "both"], default="both")
    p.add_argument("--limit", type=int, default=0, help="only the first N documents of each corpus (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--warmup", type=int, default=32, help="texts the reference encodes before the timed run")
    p.add_argument("--sides", default=",".join(ALL_SIDES), help="comma list of " + ",".join(ALL_SIDES))
    p.add_argument("--model", default="target/models/all-MiniLM-L6-v2")
    p.add_argument("--bin", default="target/release/tandem")
    p.add_argument("--out", default="bench/out")
    p.add_argument("--no-probe", action="store_true", help="skip the oneDNN verbose probe")

    st = sub.add_parser("st", help="(internal) one sentence-transformers side")
    st.add_argument("--mode", choices=ST_MODES, required=True)
    st.add_argument("--input", required=True)
    st.add_argument("--model", required=True)
    st.add_argument("--out", required=True, help=".npy; <stem>.ids.txt and <stem>.json beside it")
    st.add_argument("--threads", type=int, required=True)
    st.add_argument("--batch", type=int, required=True)
    st.add_argument("--max-length", type=int, required=True)
    st.add_argument("--warmup", type=int, required=True)

    pr = sub.add_parser("probe", help="(internal) oneDNN verbose over one forward of each ST mode")
    pr.add_argument("--model", required=True)
    pr.add_argument("--threads", type=int, required=True)
    pr.add_argument("--max-length", type=int, required=True)
    pr.add_argument("--dir", required=True)
    return p.parse_args()


# ---------------------------------------------------------------- corpus


def read_corpus(path):
    """ids and texts as BEIR / sentence-transformers build them (and tandem
    embed --field text): (title + " " + text).strip(); blank lines skipped."""
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            o = json.loads(line)
            title = o.get("title") or ""
            text = o["text"]
            ids.append(str(o.get("_id", o.get("id", i))))
            texts.append(f"{title} {text}".strip() if title else text.strip())
    return ids, texts


def first_lines(src, n, dst):
    """The first n non-blank lines of src into dst (rewritten only if they differ)."""
    out = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(line if line.endswith("\n") else line + "\n")
                if len(out) == n:
                    break
    data = "".join(out)
    if not (os.path.exists(dst) and open(dst, encoding="utf-8").read() == data):
        with open(dst, "w", encoding="utf-8") as f:
            f.write(data)
    return len(out)


# ---------------------------------------------------------------- reference side (child process)


def torch_build_lines(torch):
    keep = ("Math Kernel", "MKL-DNN", "oneDNN", "OpenMP", "CPU capability")
    lines = [l.strip(" -") for l in torch.__config__.show().splitlines() if any(k in l for k in keep)]
    settings = re.findall(r"\b(BLAS_INFO|LAPACK_INFO|USE_MKL|USE_MKLDNN|USE_OPENMP)=([^,\s]*)", torch.__config__.show())
    if settings:
        lines.append(" ".join(f"{k}={v}" for k, v in settings))
    return lines


def run_st(a):
    import torch

    torch.set_num_threads(a.threads)
    import threadpoolctl
    import transformers
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.set_verbosity_error()  # "sequence longer than ..." from the length count
    ids, texts = read_corpus(a.input)
    t_load = time.perf_counter()
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = a.max_length
    if a.mode == "st-bf16-weights":
        model.bfloat16()
    load_s = time.perf_counter() - t_load

    def ctx():
        if a.mode == "st-bf16-autocast":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(xs):
        with ctx():
            return model.encode(xs, batch_size=a.batch, convert_to_numpy=True, show_progress_bar=False)

    warm = texts[: a.warmup]
    t_warm = time.perf_counter()
    if warm:
        encode(warm)
    warmup_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    emb = encode(texts)
    seconds = time.perf_counter() - t0

    problems = []
    if not isinstance(emb, np.ndarray) or emb.shape != (len(texts), model.get_sentence_embedding_dimension()):
        problems.append(f"unexpected output {type(emb).__name__} {getattr(emb, 'shape', None)}")
    if emb.dtype != np.float32:
        problems.append(f"output dtype {emb.dtype}, not float32")
        emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        problems.append(f"{int((~np.isfinite(emb)).any(axis=1).sum())} rows not finite")

    # how many texts are longer than max length (tandem's sidecar counts the same)
    tok = model.tokenizer
    lengths = [len(x) for x in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]
    truncated = sum(l > a.max_length for l in lengths)

    stem = a.out[: -len(".npy")] if a.out.endswith(".npy") else a.out
    np.save(a.out, emb)
    with open(stem + ".ids.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(ids) + "\n")
    auto = getattr(model[0], "auto_model", None) or getattr(model[0], "model", None)
    meta = {
        "side": a.mode,
        "rows": len(texts),
        "dim": int(emb.shape[1]),
        "seconds": seconds,
        "texts_per_second": len(texts) / seconds,
        "load_seconds": load_s,
        "warmup_texts": len(warm),
        "warmup_seconds": warmup_s,
        "truncated": int(truncated),
        "tokens": {"mean": float(np.mean(lengths)), "max": int(max(lengths))},
        "output_dtype": str(emb.dtype),
        "problems": problems,
        "max_seq_length": model.max_seq_length,
        "param_dtype": str(next(model.parameters()).dtype),
        "attn_implementation": getattr(getattr(auto, "config", None), "_attn_implementation", None),
        "tokenizer": type(tok).__name__ + (" (fast)" if getattr(tok, "is_fast", False) else ""),
        "modules": [type(m).__name__ for m in model],
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "numpy": np.__version__,
            "threadpoolctl": threadpoolctl.__version__,
        },
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "mkl_available": torch.backends.mkl.is_available(),
        "torch_build": torch_build_lines(torch),
        "threadpool_info": threadpoolctl.threadpool_info(),
        "env_unset": [k for k in UNSET if k not in os.environ],
    }
    with open(stem + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    print(
        f"{a.mode}: {len(texts)} texts in {seconds:.2f} s, {len(texts) / seconds:.1f} texts/s"
        + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "")
    )


def run_probe(a):
    """One small forward per ST mode with oneDNN verbose on, fd 1 sent to a
    file per mode; prints a JSON summary of the oneDNN primitives run."""
    import ctypes

    import torch

    torch.set_num_threads(a.threads)
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.set_verbosity_error()
    libc = ctypes.CDLL(None)
    texts = ["a short text", "a somewhat longer text about cells, proteins and the immune system " * 8]
    summary = {}
    for mode in ST_MODES:
        model = SentenceTransformer(a.model, device="cpu")
        model.max_seq_length = a.max_length
        if mode == "st-bf16-weights":
            model.bfloat16()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "st-bf16-autocast" else contextlib.nullcontext()
        with ctx:
            model.encode(texts, batch_size=2, show_progress_bar=False)  # primitives created outside the log
        log = os.path.join(a.dir, f"onednn_{mode}.log")
        sys.stdout.flush()
        libc.fflush(None)
        saved = os.dup(1)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), ctx:
                model.encode(texts, batch_size=2, show_progress_bar=False)
        finally:
            sys.stdout.flush()
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(fd)
            os.close(saved)
        kinds = {}
        for line in open(log, errors="replace"):
            f = line.strip().split(",")
            if not f or not f[0].startswith("onednn_verbose") or "exec" not in f:
                continue
            i = f.index("exec")
            # onednn_verbose,[v1,][timestamp,]primitive,exec,cpu,KIND,IMPL,PROP,MEMDESCS,...
            kind, impl = f[i + 2], f[i + 3]
            rest = ",".join(f[i + 5 :])
            dts = sorted(set(re.findall(r"\b(?:src|wei|dst|data)\w*:(\w+):", rest)))
            alg = re.search(r"alg:(\w+)", rest)
            key = f"{kind}{' ' + alg.group(1) if alg else ''} {impl} [{'/'.join(dts)}]"
            kinds[key] = kinds.get(key, 0) + 1
        summary[mode] = kinds
    print(json.dumps(summary))


# ---------------------------------------------------------------- orchestration


def spawn(cmd, env, log):
    """Runs cmd, stdout+stderr to log; returns (exit code, wall seconds, peak RSS MiB)."""
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, wall, ru.ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def fail(what, log):
    tail = open(log, errors="replace").read()[-4000:]
    sys.exit(f"{what} failed; the end of {log}:\n{tail}")


def cosines(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"min": float(c.min()), "mean": float(c.mean()), "argmin": int(c.argmin())}


def cpu_info():
    model, flags = None, set()
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            if k.strip() == "model name" and model is None:
                model = v.strip()
            if k.strip() == "flags" and not flags:
                flags = set(v.split())
    except OSError:
        pass
    want = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"]
    return {"model": model, "logical_cpus": os.cpu_count(), "flags": [x for x in want if x in flags]}


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_bench(a):
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in ALL_SIDES]
    if bad:
        sys.exit(f"unknown side(s) {bad}; choose from {','.join(ALL_SIDES)}")
    if not os.path.isfile(os.path.join(a.model, "model.safetensors")):
        sys.exit(f"no model at {a.model}; run bench/fetch_minilm.sh")
    if any(s in TANDEM_MODES for s in sides) and not os.access(a.bin, os.X_OK):
        sys.exit(f"no tandem binary at {a.bin}; run cargo build --release -p tandem")
    root = os.path.join(a.out, "embed_vs_st")
    os.makedirs(os.path.join(root, "inputs"), exist_ok=True)
    me = os.path.abspath(__file__)
    T = str(a.threads)
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=T,
        MKL_NUM_THREADS=T,
        OPENBLAS_NUM_THREADS=T,
        RAYON_NUM_THREADS=T,
    )
    ref_prefix = ["env"] + [x for k in UNSET for x in ("-u", k)]
    bin_version = None
    if any(s in TANDEM_MODES for s in sides):
        r = subprocess.run([a.bin, "--version"], capture_output=True, text=True)
        bin_version = r.stdout.strip() or None
    info = {
        "settings": {
            "threads": a.threads,
            "batch": a.batch,
            "max_length": a.max_length,
            "limit": a.limit or None,
            "warmup_texts_reference": a.warmup,
            "model": a.model,
        },
        "cpu": cpu_info(),
        "tandem": {
            "git_commit": git_commit(),
            "binary": a.bin,
            "binary_version": bin_version,
            "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(a.bin))) if os.path.exists(a.bin) else None,
        },
        "reference_env_unset": list(UNSET),
        "corpora": {},
    }
    names = ["scifact", "msmarco"] if a.corpus == "both" else [a.corpus]
    ref_meta = None
    for name in names:
        src = CORPORA[name]
        if a.limit:
            inp = os.path.join(root, "inputs", f"{name}.first{a.limit}.jsonl")
            first_lines(src, a.limit, inp)
            tag = f"{name}.first{a.limit}"
        else:
            inp, tag = src, name
        ids, _ = read_corpus(inp)
        d = os.path.join(root, tag)
        os.makedirs(d, exist_ok=True)
        print(f"== {name}: {len(ids)} texts from {inp}", flush=True)
        res = {}
        for side in sides:
            npy = os.path.join(d, f"{side}.npy")
            stem = npy[: -len(".npy")]
            for p in (npy, stem + ".json", stem + ".ids.txt"):
                if os.path.exists(p):
                    os.remove(p)  # fresh outputs: nothing stale is ever read back
            log = stem + ".log"
            if side in ST_MODES:
                cmd = ref_prefix + [sys.executable, me, "st", "--mode", side, "--input", inp, "--model", a.model,
                                    "--out", npy, "--threads", T, "--batch", str(a.batch),
                                    "--max-length", str(a.max_length), "--warmup", str(a.warmup)]
            else:
                cmd = [a.bin, "embed", "--model", a.model, "--input", inp, "--out", npy, "--batch", str(a.batch),
                       "--max-length", str(a.max_length), "--threads", T,
                       "--precision", side.split("-")[1], "--force"]
            rc, wall, rss = spawn(cmd, env, log)
            if rc != 0:
                fail(side, log)
            meta = json.load(open(stem + ".json"))
            line = open(log, errors="replace").read().strip().splitlines()
            line = next((l for l in reversed(line) if "texts/s" in l), "")
            print(f"   {side:17s} {line}  [process {wall:.1f} s, peak RSS {rss:.0f} MiB]", flush=True)
            got_ids = open(stem + ".ids.txt", encoding="utf-8").read().split("\n")[:-1]
            if got_ids != ids:
                sys.exit(f"{side}: its rows are not the corpus' documents in order ({stem}.ids.txt)")
            r = {
                "texts_per_second": meta["texts_per_second"],
                "encode_seconds": meta["seconds"],
                "process_seconds": wall,
                "peak_rss_mib": rss,
                "truncated": meta.get("truncated"),
                "cmd": " ".join(cmd),
                "log": log,
            }
            if side in ST_MODES:
                ref_meta = meta
                r.update({k: meta[k] for k in ("load_seconds", "warmup_seconds", "param_dtype", "output_dtype", "problems", "tokens")})
            else:
                r["sidecar_settings"] = meta.get("settings")
            res[side] = r
        # quality, per row
        emb = {s: np.load(os.path.join(d, f"{s}.npy")) for s in res}
        for s, e in emb.items():
            res[s]["finite"] = bool(np.isfinite(e).all())
            res[s]["dtype"] = str(e.dtype)
            res[s]["shape"] = list(e.shape)
        pairs = [
            ("tandem-f32", "st-f32", GOAL_F32),
            ("tandem-bf16", "tandem-f32", GOAL_BF16),
            ("tandem-bf16", "st-f32", None),
            ("st-bf16-autocast", "st-f32", None),
            ("st-bf16-weights", "st-f32", None),
        ]
        quality = {}
        for x, y, goal in pairs:
            if x in emb and y in emb:
                c = cosines(emb[x], emb[y])
                c["goal_min"] = goal
                c["ok"] = None if goal is None else c["min"] >= goal
                quality[f"{x} vs {y}"] = c
        st_sides = [s for s in ST_MODES if s in res]
        td_sides = [s for s in TANDEM_MODES if s in res]
        summary = {}
        if st_sides:
            summary["st_best"] = max(st_sides, key=lambda s: res[s]["texts_per_second"])
            bf = [s for s in ("st-bf16-autocast", "st-bf16-weights") if s in res]
            if bf:
                summary["st_bf16_best"] = max(bf, key=lambda s: res[s]["texts_per_second"])
        if td_sides:
            summary["tandem_best"] = max(td_sides, key=lambda s: res[s]["texts_per_second"])
        if st_sides and td_sides:
            ratio = res[summary["tandem_best"]]["texts_per_second"] / res[summary["st_best"]]["texts_per_second"]
            summary["ratio_tandem_best_over_st_best"] = ratio
            summary["goal_ratio"] = GOAL_RATIO
            summary["ratio_ok"] = ratio >= GOAL_RATIO
        if "st-f32" in res and "tandem-f32" in res:
            summary["ratio_f32"] = res["tandem-f32"]["texts_per_second"] / res["st-f32"]["texts_per_second"]
        info["corpora"][name] = {"input": inp, "rows": len(ids), "sides": res, "quality": quality, "summary": summary}

    if ref_meta is not None:
        info["reference"] = {k: ref_meta[k] for k in (
            "versions", "torch_cpu_capability", "mkldnn_available", "mkldnn_bf16_supported", "mkl_available",
            "torch_build", "threadpool_info", "attn_implementation", "tokenizer", "modules", "torch_threads",
            "env_unset")}
        if not a.no_probe:
            pdir = os.path.join(root, "probe")
            os.makedirs(pdir, exist_ok=True)
            log = os.path.join(pdir, "probe.log")
            cmd = ref_prefix + [sys.executable, me, "probe", "--model", a.model, "--threads", T,
                                "--max-length", str(a.max_length), "--dir", pdir]
            rc, _, _ = spawn(cmd, env, log)
            if rc != 0:
                print(f"(the oneDNN probe failed; see {log})")
            else:
                last = open(log, errors="replace").read().strip().splitlines()[-1]
                info["reference"]["onednn_primitives"] = json.loads(last)
    report(info)
    path = os.path.join(a.out, "embed_vs_st.json")
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
    print(f"\nresults: {path}")


def report(info):
    s = info["settings"]
    labels = {
        "st-f32": "sentence-transformers f32",
        "st-bf16-autocast": "sentence-transformers bf16 autocast",
        "st-bf16-weights": "sentence-transformers bf16 weights",
        "tandem-f32": "tandem embed f32",
        "tandem-bf16": "tandem embed bf16",
    }
    refs = {"tandem-f32": "st-f32", "tandem-bf16": "tandem-f32", "st-bf16-autocast": "st-f32", "st-bf16-weights": "st-f32"}
    for name, c in info["corpora"].items():
        res, q, sm = c["sides"], c["quality"], c["summary"]
        print(f"\n{name}: {c['rows']} texts, all-MiniLM-L6-v2, max length {s['max_length']}, batch {s['batch']}, "
              f"{s['threads']} threads")
        hdr = f"  {'side':36s} {'texts/s':>8s} {'encode s':>9s} {'process s':>10s} {'peak RSS MiB':>13s} {'trunc':>6s}  min cos (vs)"
        print(hdr)
        print("  " + "-" * (len(hdr) + 14))
        for side in ALL_SIDES:
            if side not in res:
                continue
            r = res[side]
            ref = refs.get(side)
            cos = ""
            if ref and f"{side} vs {ref}" in q:
                cos = f"{q[f'{side} vs {ref}']['min']:.7f} ({ref})"
            print(f"  {labels[side]:36s} {r['texts_per_second']:8.1f} {r['encode_seconds']:9.2f} "
                  f"{r['process_seconds']:10.1f} {r['peak_rss_mib']:13.0f} {str(r['truncated']):>6s}  {cos}")
        warm = [f"{k} {r['warmup_seconds']:.1f} s" for k, r in res.items() if "warmup_seconds" in r]
        if warm:
            print(f"  (the reference's process seconds include its warm-up encode of {s['warmup_texts_reference']} "
                  f"texts: {', '.join(warm)}; tandem does none)")
        for k, v in q.items():
            goal = "" if v["goal_min"] is None else f"  goal min >= {v['goal_min']}: {'ok' if v['ok'] else 'MISSED'}"
            print(f"  cos {k:30s} min {v['min']:.7f} (1-min {1 - v['min']:.1e}, row {v['argmin']})  "
                  f"mean {v['mean']:.7f}{goal}")
        if "st_bf16_best" in sm:
            print(f"  sentence-transformers bf16, faster of autocast / weights: {sm['st_bf16_best']}")
        if "ratio_tandem_best_over_st_best" in sm:
            print(f"  tandem best ({sm['tandem_best']}) / sentence-transformers best ({sm['st_best']}) = "
                  f"{sm['ratio_tandem_best_over_st_best']:.2f}x  (goal >= {sm['goal_ratio']}x: "
                  f"{'ok' if sm['ratio_ok'] else 'MISSED'})")
        if "ratio_f32" in sm:
            print(f"  tandem f32 / sentence-transformers f32 = {sm['ratio_f32']:.2f}x")
        trunc = {r["truncated"] for r in res.values()}
        if len(trunc) > 1:
            print(f"  NOTE: the sides count different numbers of texts over {s['max_length']} tokens: "
                  + ", ".join(f"{k} {r['truncated']}" for k, r in res.items()))
        for side, r in res.items():
            for p in r.get("problems") or []:
                print(f"  PROBLEM {side}: {p}")
            if not r["finite"] or r["dtype"] != "float32":
                print(f"  PROBLEM {side}: output {r['dtype']}, finite={r['finite']}")

    print("\nversions and machine")
    cpu, t = info["cpu"], info["tandem"]
    print(f"  CPU: {cpu['model']} ({cpu['logical_cpus']} logical CPUs; {' '.join(cpu['flags'])})")
    print(f"  tandem: commit {t['git_commit']}, {t['binary_version']}, binary {t['binary']} built {t['binary_mtime']}")
    ref = info.get("reference")
    if ref:
        v = ref["versions"]
        print(f"  python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
              f"sentence-transformers {v['sentence_transformers']}, numpy {v['numpy']}, threadpoolctl {v['threadpoolctl']}")
        print(f"  torch CPU capability: {ref['torch_cpu_capability']}; oneDNN available {ref['mkldnn_available']}, "
              f"oneDNN bf16 supported {ref['mkldnn_bf16_supported']}; MKL {ref['mkl_available']}; "
              f"torch threads {ref['torch_threads']}; attention {ref['attn_implementation']}; tokenizer {ref['tokenizer']}")
        for l in ref["torch_build"]:
            print(f"  torch build: {l}")
        print(f"  reference ran with {', '.join(ref['env_unset'])} unset; threadpool_info() (torch's MKL is linked "
              "statically and does not show here; numpy's OpenBLAS does):")
        for p in ref["threadpool_info"]:
            print(f"    {p.get('user_api')}/{p.get('internal_api')} {p.get('version')} threads={p.get('num_threads')} "
                  f"arch={p.get('architecture')} {os.path.basename(p.get('filepath', ''))}")
        prims = ref.get("onednn_primitives")
        if prims is not None:
            print("  oneDNN primitives in one forward (probe, verbose on):")
            for mode, kinds in prims.items():
                if not any(k.startswith(("matmul", "inner_product")) for k in kinds):
                    print(f"    {mode}: no oneDNN matmul / inner_product (its matrix products are MKL's)")
                for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
                    print(f"    {mode}: {n:4d} x {k}")


def main():
    a = parse()
    if a.cmd == "st":
        run_st(a)
    elif a.cmd == "probe":
        run_probe(a)
    else:
        run_bench(a)


if __name__ == "__main__":
    main()
