#!/bin/sh
# api_exports.sh NM LIBPOCKETLLM.so LIBPOCKETLLM.a POCKETLLM.h: the shared library exports only
# pocketllm_* (and the version node), the static archive defines no other global symbol, both
# hold the API's entry points, and the .so exports exactly the functions the header declares
# (POCKETLLM_API), counted: a function added to the header without its export, or an export
# without its declaration, fails.
set -u
nm=$1 so=$2 a=$3 header=$4
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
    pocketllm_set_log pocketllm_home_open_none; do
    printf '%s\n' "$dyn" | grep -qx "$f" || { echo "FAIL: $so does not export $f"; fail=1; }
done
glob=$("$nm" -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u)
bad=$(printf '%s\n' "$glob" | grep -v -e '^pocketllm_' -e '^$')
if [ -n "$bad" ]; then
    echo "FAIL: $a defines global symbols outside the API:"; printf '%s\n' "$bad" | head -20
    fail=1
fi
printf '%s\n' "$glob" | grep -qx pocketllm_train || { echo "FAIL: $a lacks pocketllm_train"; fail=1; }
declared=$(sed -n 's/^POCKETLLM_API[^(]*[ *]\(pocketllm_[a-z_0-9]*\)(.*/\1/p' "$header" | sort -u)
exported=$(printf '%s\n' "$dyn" | grep '^pocketllm_')
n=$(printf '%s\n' "$exported" | grep -c .)
nd=$(printf '%s\n' "$declared" | grep -c .)
if [ "$n" -ne "$nd" ] || [ "$exported" != "$declared" ]; then
    echo "FAIL: $so exports $n pocketllm_* functions, $header declares $nd; differences:"
    printf '%s\n' "$exported" > "${TMPDIR:-/tmp}/pk_exports.$$"
    printf '%s\n' "$declared" | diff - "${TMPDIR:-/tmp}/pk_exports.$$" | grep '^[<>]'
    rm -f "${TMPDIR:-/tmp}/pk_exports.$$"
    fail=1
fi
[ $fail -eq 0 ] && echo "ok: $n pocketllm_* symbols exported (the $nd the header declares), nothing else"
exit $fail
