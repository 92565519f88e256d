# The option tables of the store, tokenizer, sync and product commands through the built CLI:
# data export to stdout, options before a data sub-command, plot of several runs, usage errors
# naming the flag, and --help listing every option.
pk_add_test(test_cli_data SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_data.c
    LIBS PkgConfig::CJSON LABELS unit TIMEOUT 120)
add_dependencies(test_cli_data pocketllm)
# The state of a home through the CLI: a file in its place, loose permissions, an empty
# passphrase, ulimit -f, a read-only home, a rekey while an import runs.
pk_add_test(test_cli_homes SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_homes.c LABELS unit
    TIMEOUT 120)
add_dependencies(test_cli_homes pocketllm)
