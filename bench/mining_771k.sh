#!/usr/bin/env bash
# Mining at 771,000 rows (issue 12): steps/s of `tandem train` on the world of
# `tandem synth --preset project` with and without a curriculum, the first
# step's time, peak RSS, and the run-wide mining cache: its one-off mining
# (epoch 0) and the speed once it is mined (epoch 1 on). Usage, from anywhere:
#   bench/mining_771k.sh [--work DIR] [--threads 2] [--steps 300] [--sub 5544] [--only-sub]
# DIR (default target/mining-771k) holds the worlds and the runs. Four runs:
#   none, mine:         the world, --steps steps, without and with mining;
#   none-sub, mine-sub: the same bank, only the first --sub train sequences
#                       (~49,700 examples, 1,552 steps an epoch), for an
#                       epoch and a half: epoch 0 mines the cache, epoch 1
#                       draws from it. (A whole epoch of the full world mines
#                       499,899 examples; the cache's speed per step does not
#                       depend on how many there are.)
# --only-sub skips the first two. Prints one JSON line per run, with the
# load average when it started and ended, and the process's CPU seconds per
# step (steady against other load, unlike steps/s); run it on a machine as
# quiet as you can find.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/mining-771k
threads=2
steps=300
sub=5544
only_sub=""
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --sub) sub="$2"; shift 2 ;;
        --only-sub) only_sub=1; shift ;;
        *) echo "bench/mining_771k.sh: unknown flag $1; use --work DIR, --threads T, --steps N, --sub SEQUENCES, --only-sub" >&2; exit 2 ;;
    esac
done
cargo build --release --bin tandem
tandem=target/release/tandem
mkdir -p "$work"
[ -f "$work/world/dataset.json" ] || "$tandem" synth --preset project --out "$work/world"
# The sub-world: the same bank and ids (links), val and test, the first
# $sub train sequences.
rm -rf "$work/world-sub"
mkdir -p "$work/world-sub"
ln -s ../world/bank.npy "$work/world-sub/bank.npy"
ln -s ../world/ids.txt "$work/world-sub/ids.txt"
python3 - "$work" "$sub" <<'PY'
import json, sys
work, keep = sys.argv[1], int(sys.argv[2])
kept = examples = 0
with open(f"{work}/world-sub/sequences.jsonl", "w") as out:
    for line in open(f"{work}/world/sequences.jsonl"):
        s = json.loads(line)
        if s["split"] == "train":
            if kept == keep:
                continue
            kept += 1
            examples += len(s["rows"]) - 1
        out.write(line)
d = json.load(open(f"{work}/world/dataset.json"))
d["splits"]["train"] = {"sequences": kept, "examples": examples}
d["provenance"]["command"] += f" (then the first {kept} train sequences: bench/mining_771k.sh)"
json.dump(d, open(f"{work}/world-sub/dataset.json", "w"), indent=2)
PY
load() { cut -d' ' -f1-3 /proc/loadavg; }
# run NAME WORLD CURRICULUM MAX_STEPS: one run from scratch, timed, its summary printed.
run() {
    local name=$1 world=$2 curriculum=$3 max=$4
    local before
    before=$(load)
    rm -rf "$work/$name"
    local t0 first=""
    t0=$(date +%s.%N)
    /usr/bin/time -f "%e %M" -o "$work/$name.time" "$tandem" train --data "$work/$world" --out "$work/$name" \
        --kind gru --epochs 10 --max-steps "$max" --queue 50000 --curriculum "$curriculum" \
        --eval-limit 2000 --threads "$threads" 2> "$work/$name.log" &
    local pid=$! child=""
    # Seconds from the command's start to its first `train` line (step 10),
    # and (step, CPU seconds of the process) samples: CPU time per step
    # does not depend on what else the machine runs, wall time does.
    : > "$work/$name.cpu"
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$first" ] && grep -q '"train"' "$work/$name/metrics.jsonl" 2>/dev/null; then
            first=$(echo "$(date +%s.%N) - $t0" | bc)
        fi
        [ -n "$child" ] || child=$(pgrep -P "$pid" || true)
        if [ -n "$child" ] && [ -r "/proc/$child/stat" ]; then
            local step ticks
            step=$(tail -n 1 "$work/$name/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2 || true)
            ticks=$(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || true)
            [ -n "$step" ] && [ -n "$ticks" ] && echo "$step $ticks" >> "$work/$name.cpu"
        fi
        sleep 0.2
    done
    wait "$pid"
    python3 - "$work/$name" "$name" "$before" "$(load)" "$(cat "$work/$name.time")" "${first:-nan}" "$steps" "$(getconf CLK_TCK)" <<'PY'
import json, os, statistics, sys
run, name, before, after, timing, first_s, steps, tck = sys.argv[1:9]
samples = [tuple(map(int, l.split())) for l in open(f"{run}.cpu") if len(l.split()) == 2]
def cpu_per_step(lo, hi):
    # CPU seconds per step between the first sample at step >= lo and the last at step <= hi.
    inside = [s for s in samples if lo <= s[0] <= hi]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return float("nan")
    return round((inside[-1][1] - inside[0][1]) / int(tck) / (inside[-1][0] - inside[0][0]), 4)
wall, rss_kb = timing.split()
lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
train = [l for l in lines if l.get("kind") == "train"]
first = train[0]
def rate(rows):
    # steps/s over the lines' windows: steps / seconds, from elapsed_s.
    if len(rows) < 2:
        return float("nan")
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"])
out = {
    "run": name,
    "steps": train[-1]["step"],
    "steps_per_s": round(rate(train), 2),
    f"first_{steps}_cpu_s_per_step": cpu_per_step(20, int(steps)),
    f"first_{steps}_steps_per_s": round(rate([l for l in train if l["step"] <= int(steps)]), 2),
    "median_line_steps_per_s": round(statistics.median(l["steps_per_s"] for l in train), 2),
    "first_line_step": first["step"],
    "first_line_after_s": float(first_s),
    "wall_s": float(wall),
    "peak_rss_gb": round(int(rss_kb) / 1e6, 2),
    "load_before": before,
    "load_after": after,
}
epochs = sorted({l["epoch"] for l in train})
if len(epochs) > 1:
    for e in epochs:
        rows = [l for l in train if l["epoch"] == e]
        out[f"epoch{e}_steps_per_s"] = round(rate(rows), 2)
        out[f"epoch{e}_median_line_steps_per_s"] = round(statistics.median(l["steps_per_s"] for l in rows), 2)
        # Away from the epoch's ends (validation, checkpoints, the test).
        out[f"epoch{e}_cpu_s_per_step"] = cpu_per_step(rows[0]["step"] + 50, rows[-1]["step"] - 50)
if "mine_cached" in train[-1]:
    full = next((l for l in train if l["mine_cached"] >= 1.0), None)
    out["mine_cached"] = train[-1]["mine_cached"]
    out["mine_cache_mb"] = train[-1]["mine_cache_mb"]
    out["mine_search_s"] = round(train[-1]["mine_s"], 1)
    if full:
        out["cache_full_at_step"] = full["step"]
        out["cache_full_at_elapsed_s"] = round(full["elapsed_s"], 1)
print(json.dumps(out))
PY
}
if [ -z "$only_sub" ]; then
    run none world "0-9:none" "$steps"
    run mine world "0-9:8@0.3-0.9" "$steps"
fi
sub_steps=$(python3 -c "import json; e=json.load(open('$work/world-sub/dataset.json'))['splits']['train']['examples']; print(3 * (e // 32) // 2)")
run none-sub world-sub "0-9:none" "$sub_steps"
run mine-sub world-sub "0-9:8@0.3-0.9" "$sub_steps"
