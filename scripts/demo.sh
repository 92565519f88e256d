#!/bin/sh
# demo.sh: the README's first command. Installs what is missing, builds PocketLLM (Release) and
# runs the end-to-end demo (`pocketllm demo`) on the embedded default dataset and the
# stories260k model shipped in models/: a plain clone is enough (no ../shared needed).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target pocketllm pocketllm-server-mock
exec ./build/cli/pocketllm demo "$@"
