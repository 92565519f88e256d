# MeZO area tests (issue 7): the z generator, the MeZO step/trainer and the CLI commands.
pk_add_test(test_rng SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_rng.c LABELS unit TIMEOUT 120)
pk_add_test(test_mezo SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_mezo.c
    LIBS pk_agent pk_model pk_store pk_crypto PkgConfig::CJSON PkgConfig::SODIUM OpenMP::OpenMP_C
    LABELS unit TIMEOUT 300)
