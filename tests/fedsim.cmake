# `pocketllm model-info` and `pocketllm fedsim` end to end on stories260k: a short experiment
# (3 devices, 2 rounds, dropouts, stragglers, baseline), the same global hashes at another
# --parallel with coordinator faults, the log check's values under DP noise (and a changed
# record caught), bad input with no process left behind.
pk_add_test(test_fedsim SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fedsim.c
    LIBS pk_fedsim pk_crypto pk_mezo pk_model PkgConfig::CJSON LABELS unit TIMEOUT 240)
add_dependencies(test_fedsim pocketllm pocketllm-server-mock)
# Splits: sizes, determinism, label skew (a library test, no processes).
pk_add_test(test_fedsim_split SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fedsim_split.c
    LIBS pk_fedsim LABELS unit TIMEOUT 60)
