#!/usr/bin/env bash
# On a lent GPU machine (its python3 has torch and Lightning, not Hydra, OmegaConf or mnist1d,
# and nothing can be fetched there): install the wheels `make gpu-kit` put in gpu_kit/wheels
# (carried: run(carry=["gpu_kit"], ...)), then run scripts/gpu_checks.py into $OUT.
#     bash scripts/gpu_checks.sh [--only env gpu_fp32 ...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_checks}
ls gpu_kit/wheels/*.whl >/dev/null || { echo "no gpu_kit/wheels: run make gpu-kit here first"; exit 2; }
python3 -m pip install -q --no-deps --no-index gpu_kit/wheels/*.whl 2>&1 | grep -v "^WARNING" || true
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
python3 scripts/gpu_checks.py --out "$OUT" "$@"
