#!/bin/sh
# api_exports.sh NM LIBPOCKETLLM.so LIBPOCKETLLM.a: the shared library exports only pocketllm_*
# (and the version node), the static archive defines no other global symbol, and both hold
# the API's entry points.
set -u
nm=$1 so=$2 a=$3
fail=0
dyn=$("$nm" -D --defined-only "$so" | awk '{ print $3 }' | sed 's/@.*//' | sort -u)
bad=$(printf '%s\n' "$dyn" | grep -v -e '^pocketllm_' -e '^POCKETLLM_0$' -e '^$')
if [ -n "$bad" ]; then
    echo "FAIL: $so exports symbols outside the API:"; printf '%s\n' "$bad" | head -20
    fail=1
fi
for f in pocketllm_home_open pocketllm_home_close pocketllm_errmsg pocketllm_import \
    pocketllm_datasets pocketllm_dataset_forget pocketllm_train pocketllm_cancel pocketllm_eval \
    pocketllm_generate pocketllm_export_seedlog pocketllm_sync pocketllm_version \
    pocketllm_set_log; do
    printf '%s\n' "$dyn" | grep -qx "$f" || { echo "FAIL: $so does not export $f"; fail=1; }
done
glob=$("$nm" -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u)
bad=$(printf '%s\n' "$glob" | grep -v -e '^pocketllm_' -e '^$')
if [ -n "$bad" ]; then
    echo "FAIL: $a defines global symbols outside the API:"; printf '%s\n' "$bad" | head -20
    fail=1
fi
printf '%s\n' "$glob" | grep -qx pocketllm_train || { echo "FAIL: $a lacks pocketllm_train"; fail=1; }
n=$(printf '%s\n' "$dyn" | grep -c '^pocketllm_')
[ $fail -eq 0 ] && echo "ok: $n pocketllm_* symbols exported, nothing else"
exit $fail
