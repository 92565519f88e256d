# Crypto + store tests: known answers and tamper loops, the store round trip, crash
# (kill -9), full-disk and two-process tests, the CLI, and fuzz targets for records/importers.
pk_add_test(test_crypto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crypto.c
    LIBS pk_crypto LABELS unit TIMEOUT 60)
pk_add_test(test_store SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store.c
    LIBS pk_store pk_crypto PkgConfig::SQLITE LABELS unit TIMEOUT 120)
target_include_directories(test_store PRIVATE ${CMAKE_SOURCE_DIR}/store) # store_impl.h
pk_add_test(test_store_crash SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store_crash.c
    LIBS pk_store pk_crypto PkgConfig::SQLITE LABELS unit TIMEOUT 180)
pk_add_test(test_store_crash_slow SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store_crash.c
    LIBS pk_store pk_crypto PkgConfig::SQLITE LABELS slow TIMEOUT 900)
target_compile_definitions(test_store_crash_slow PRIVATE PK_CRASH_TRIALS=20)
pk_add_fuzz(fuzz_record SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_record.c LIBS pk_store pk_crypto
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/store/record)
pk_add_fuzz(fuzz_import SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_import.c LIBS pk_store pk_crypto
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/store/import)
# release_only without PK_FUZZ: the clang libFuzzer build of scripts/test.sh runs both targets under
# ASan+UBSan from the same corpus, so the gcc ASan build leaves them out.
if(NOT PK_FUZZ)
    set_tests_properties(fuzz_record fuzz_import PROPERTIES LABELS "unit;release_only")
endif()
pk_add_test(test_store_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store_cli.c
    LIBS pk_store pk_crypto LABELS unit TIMEOUT 120)
add_dependencies(test_store_cli pocketllm)
pk_add_test(test_import_errors SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_import_errors.c
    LIBS pk_store pk_crypto LABELS unit TIMEOUT 60)
pk_add_test(test_store_home SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store_home.c
    LIBS pk_store pk_crypto PkgConfig::SQLITE LABELS unit TIMEOUT 60)
