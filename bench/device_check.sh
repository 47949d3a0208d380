#!/usr/bin/env bash
# The paper tier's GPU check as a GPU machine runs it: no install, no network.  The machine's own python3 (torch,
# transformers, peft, numpy, pandas) runs bench/gpu_check.py with this repository on PYTHONPATH, on random
# weights from the OPT configs in bench/model_configs/, and writes JSON under $OUT (default results/device):
#   gpu_check.json   the check's report (docs/paper-tier.md says how to read it)
#   versions.json    the python, torch, CUDA and transformers it ran with
# DEVICE=cpu runs the same code path on CPU with a tiny OPT (its rehearsal; CI runs it).  TIMEOUT (seconds,
# default 420) bounds the check, so one 10-minute call on a lent GPU leaves room for a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-results/device}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$PY" - "$OUT/versions.json" <<'PYEOF'
import json, platform, sys
import torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
open(sys.argv[1], "w").write(json.dumps(info, indent=1) + "\n")
print(json.dumps(info))
PYEOF
if [ "$DEVICE" = cpu ]; then
  ARGS=(--device cpu --tiny --rounds 100 --batch 4 --seq 16 --repeat 1)
else
  ARGS=(--device cuda)
fi
timeout "${TIMEOUT:-420}" "$PY" -m bench.gpu_check "${ARGS[@]}" --out "$OUT/gpu_check.json" > "$OUT/gpu_check.log" 2>&1 || {
  rc=$?; tail -20 "$OUT/gpu_check.log" >&2; echo "gpu_check exited with $rc (124: past TIMEOUT)" >&2; exit "$rc"; }
echo "wrote $OUT/gpu_check.json"
