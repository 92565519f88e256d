# MeZO area tests (issue 7): the z generator, the MeZO step/trainer and the CLI commands.
pk_add_test(test_rng SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_rng.c LABELS unit TIMEOUT 120)
