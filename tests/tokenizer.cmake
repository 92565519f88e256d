# Tokenizer area tests: golden ids and decode round trips, errors, and the fuzz target.
pk_add_test(test_tokenizer SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer.c
    LIBS pk_tokenizer PkgConfig::CJSON LABELS unit TIMEOUT 120)
pk_add_fuzz(fuzz_tokenizer SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_tokenizer.c LIBS pk_tokenizer
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/tokenizer)
# End-to-end run of the built CLI (pocketllm tokenize / bench tokenize).
pk_add_test(test_tokenizer_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_cli.c
    LABELS unit TIMEOUT 120)
add_dependencies(test_tokenizer_cli pocketllm)
