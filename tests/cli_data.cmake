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
# The same binary's randomized import/rekey races (at least 20 trials), in the slow label.
add_test(NAME test_cli_homes_races COMMAND test_cli_homes races 24)
set_tests_properties(test_cli_homes_races PROPERTIES LABELS slow TIMEOUT 900)
# A model with a NaN weight: named at load, forward and generate exit 1.
pk_add_test(test_cli_nonfinite SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_nonfinite.c
    LABELS unit TIMEOUT 60)
add_dependencies(test_cli_nonfinite pocketllm)
