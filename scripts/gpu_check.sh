#!/usr/bin/env bash
# GPU check (issue 23): training step time, peak GPU memory and tokens/s of the paper-sized presets (cosmos_roc_n16,
# cosmos_roc_n128: stage 1 and 2; ldlm_lm1b, ldlm_owt: joint stage), 50 steps each in bf16, eager and with
# torch.compile, then the sampling bench (latent vs GPT-2, step cost) at batch 512. One command, <= 10 minutes on one
# H100 (a 540 s budget inside: later items are skipped with a note). Writes results/gpu_check.json (rewritten after
# every item) and prints it. Nothing is downloaded: random weights of the pretrained encoders' shapes, synthetic batches.
#
#   bash scripts/gpu_check.sh                       # the full check (needs CUDA)
#   bash scripts/gpu_check.sh --smoke --out /tmp/g.json   # tiny sizes, fp32: seconds, also on a CPU
#   bash scripts/gpu_check.sh --only ldlm_owt_joint,bench --budget 300   # a subset (names: the JSON's config.order)
#
# On a machine without ldlm installed the script runs it from src/. ema-pytorch (the trainer's EMA) is the one
# dependency a bare CUDA image may lack: put its wheel in .whl/ (python3 -m pip download --no-deps -d .whl
# ema-pytorch) and the script installs it from there, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
py=${PYTHON:-python3}
if ! "$py" -c "import ldlm" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$py" -c "import ema_pytorch" 2>/dev/null; then
  if ! compgen -G ".whl/ema_pytorch-*.whl" >/dev/null; then
    echo "gpu_check.sh: ema_pytorch is missing and .whl/ holds no ema_pytorch wheel" >&2
    exit 2
  fi
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ldlm_gpu_check_site \
    .whl/ema_pytorch-*.whl
  export PYTHONPATH="/tmp/ldlm_gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$py" -m ldlm.apps.bench.gpu_check --out results/gpu_check.json "$@"
