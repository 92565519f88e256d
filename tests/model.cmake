# Engine tests: reference logits/losses of every model in the test-vector bundle,
# generation, the perturbation hook, malformed inputs, and fuzz targets for the parsers.
pk_add_test(test_model SOURCES test_model.c LIBS pk_model PkgConfig::CJSON LABELS unit TIMEOUT 300)
target_include_directories(test_model PRIVATE ${CMAKE_SOURCE_DIR}/model)
pk_add_test(test_model_errors SOURCES test_model_errors.c LIBS pk_model LABELS unit TIMEOUT 120)
# libFuzzer target over the safetensors header, config.json and whole-file loader (seed corpus:
# hand-made tiny llama header/config/files in tests/corpus/model).
pk_add_fuzz(fuzz_model SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_model.c LIBS pk_model
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/model)
# release_only without PK_FUZZ: the clang libFuzzer build of scripts/test.sh runs this target under
# ASan+UBSan from the same corpus, so the gcc ASan build leaves it out.
if(NOT PK_FUZZ)
    set_tests_properties(fuzz_model PROPERTIES LABELS "unit;release_only")
endif()
# Determinism by construction: forward outputs bit-identical under 1, 2 and 3 threads
# on every tiny model, under each OpenBLAS kernel the CPU runs (the test re-runs itself with
# OPENBLAS_CORETYPE unset, Haswell and, with AVX-512, SkylakeX).
# release_only: it compares numbers (the same forward passes many times over), which a sanitizer
# does not change; the forward code runs sanitized in test_model, test_mezo and test_trainer.
pk_add_test(test_determinism SOURCES test_determinism.c LIBS pk_model LABELS unit release_only
    TIMEOUT 300)
# The first MeZO step's copy-on-write faults moved to load time: pk_model_make_writable
# keeps bytes and logits, removes the per-page faults, keeps RSS, and pk_model_restore_base works.
pk_add_test(test_model_writable SOURCES test_model_writable.c LIBS pk_model LABELS unit TIMEOUT 120)
target_include_directories(test_determinism PRIVATE ${CMAKE_SOURCE_DIR}/model)
target_include_directories(test_model_writable PRIVATE ${CMAKE_SOURCE_DIR}/model)
