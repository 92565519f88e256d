#!/bin/sh
# metrics.sh: layout figures of the tree (largest file, longest functions, line share per folder,
# clang-format drift). Functions are found by the Linux brace style: a '{' alone in column 0
# opens a function body, a '}' in column 0 closes it.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
echo "largest files (lines):"
wc -l $files | sort -n | tail -4 | head -3
echo "longest functions (lines, file:line name):"
for f in $(git ls-files '*.c'); do
    awk -v F="$f" '
        /^\{$/ { start = NR; name = prev; next }
        /^\}/ && start { n = NR - start + 1; sub(/\(.*/, "", name); sub(/.*[ *]/, "", name);
                         printf "%d %s:%d %s\n", n, F, start, name; start = 0 }
        { if ($0 !~ /^[ \t]/ && $0 != "") { if ($0 ~ /\(/) prev = $0 } }' "$f"
done | sort -n | tail -"${1:-8}"
total=$(cat $files | wc -l)
echo "lines per top folder (of $total in .c/.h):"
for d in $(echo "$files" | cut -d/ -f1 | sort -u); do
    n=$(cat $(echo "$files" | grep "^$d/") | wc -l)
    awk -v d="$d" -v n="$n" -v t="$total" 'BEGIN { printf "  %-12s %6d  %4.1f%%\n", d, n, 100 * n / t }'
done
n=0
for f in $files; do clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || n=$((n + 1)); done
echo "clang-format: $n of $(echo "$files" | wc -l) files differ"
