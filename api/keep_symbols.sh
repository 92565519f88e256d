#!/bin/sh
# keep_symbols.sh NM OBJECT OUT: writes the defined global pocketllm_* symbols of OBJECT to OUT,
# one a line: the list objcopy --keep-global-symbols keeps global (api/CMakeLists.txt).
set -eu
"$1" -g --defined-only "$2" | awk '$3 ~ /^pocketllm_/ { print $3 }' > "$3"
test -s "$3" || { echo "keep_symbols.sh: no pocketllm_* symbol in $2" >&2; exit 1; }
