# Tokenizer area tests: golden ids and decode round trips, errors, and the fuzz target.
pk_add_test(test_tokenizer SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer.c
    LIBS pk_tokenizer PkgConfig::CJSON LABELS unit TIMEOUT 120)
pk_add_fuzz(fuzz_tokenizer SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_tokenizer.c LIBS pk_tokenizer
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/tokenizer)
# release_only without PK_FUZZ: the clang libFuzzer build of scripts/test.sh runs this target under
# ASan+UBSan from the same corpus, so the gcc ASan build leaves it out.
if(NOT PK_FUZZ)
    set_tests_properties(fuzz_tokenizer PROPERTIES LABELS "unit;release_only")
endif()
# End-to-end run of the built CLI (pocketllm tokenize / bench tokenize).
pk_add_test(test_tokenizer_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_cli.c
    LABELS unit TIMEOUT 120)
add_dependencies(test_tokenizer_cli pocketllm)
