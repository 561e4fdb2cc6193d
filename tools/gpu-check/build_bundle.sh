#!/usr/bin/env bash
# Builds .gpu/site.tar.xz (ignored; carried to the GPU machine): every package raymlp needs on the GPU machine (cp312, manylinux x86_64)
# that its preinstalled Python lacks, unpacked as one site-packages tree, stripped, xz-compressed.
# Usage (from the repo root, on a machine with a package index): bash tools/gpu-check/build_bundle.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUTDIR="$(cd "$HERE/../.." && pwd)/.gpu"
mkdir -p "$OUTDIR"
WORK="${WORK:-/tmp/gpuwheels}"
PY="${PY:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
mkdir -p "$WORK/wheels"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WORK/wheels" -r "$HERE/requirements.txt"
rm -rf "$WORK/site" && mkdir "$WORK/site"
while read -r line; do
  name="${line%%==*}"; [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  norm="$(echo "$name" | tr 'A-Z-' 'a-z_')"
  wheel="$(ls "$WORK/wheels" | awk -v n="$norm" 'tolower($0) ~ "^"n"-" {print; exit}')"
  [ -n "$wheel" ] || { echo "no wheel for $name" >&2; exit 1; }
  unzip -q -o "$WORK/wheels/$wheel" -d "$WORK/site"   # unzip keeps the executable bits (raylet, gcs_server)
done < "$HERE/requirements.txt"
cd "$WORK/site"
rm -rf ./*.data                               # wheel data dirs (licences); nothing imports them
# Ray: Java jars, RLlib, the dashboard's JS build (an empty build/ with a stub index.html stays: the
# dashboard head refuses to start on Linux without the folder), LLM serving.
rm -rf ray/jars ray/rllib ray/llm
rm -rf ray/dashboard/client
mkdir -p ray/dashboard/client/build/static
echo '<html><body>Ray dashboard UI stripped from this bundle; the HTTP API works.</body></html>' > ray/dashboard/client/build/index.html
# MLflow: the tracking server's web UI (raymlp only uses the Python client and its SQL store).
rm -rf mlflow/server/js
find . -name '__pycache__' -type d -prune -exec rm -rf {} +
cd "$WORK"
tar -cf - -C site . | xz -T2 -6 > "$OUTDIR/site.tar.xz"
ls -la "$OUTDIR/site.tar.xz"
