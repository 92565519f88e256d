# Engine tests: reference logits/losses of every model in the test-vector bundle,
# generation, the perturbation hook, malformed inputs, and fuzz targets for the parsers.
pk_add_test(test_model SOURCES test_model.c LIBS pk_model PkgConfig::CJSON LABELS unit TIMEOUT 300)
target_include_directories(test_model PRIVATE ${CMAKE_SOURCE_DIR}/model)
pk_add_test(test_model_errors SOURCES test_model_errors.c LIBS pk_model LABELS unit TIMEOUT 120)
# libFuzzer target over the safetensors header, config.json and whole-file loader (seed corpus:
# hand-made tiny llama header/config/files in tests/corpus/model).
pk_add_fuzz(fuzz_model SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_model.c LIBS pk_model
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/model)
