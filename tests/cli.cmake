# CLI option tables through the built pocketllm: parse errors exit 2 naming the flag, a repeated
# option takes its last value, --threads is capped with a note, --help lists every option; and
# the engine and trainer commands (forward, generate, make-model, eval, replay, runs, mezo-probe,
# bench forward / mezo) end to end on stories260k.
pk_add_test(test_cli_opts SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_opts.c
    LIBS PkgConfig::CJSON LABELS unit TIMEOUT 300)
add_dependencies(test_cli_opts pocketllm)
