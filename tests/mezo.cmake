# MeZO area tests: the z generator, the MeZO step/trainer and the CLI commands.
pk_add_test(test_rng SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_rng.c LABELS unit TIMEOUT 120)
pk_add_test(test_mezo SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_mezo.c
    LIBS pk_train pk_mezo pk_model pk_store pk_crypto PkgConfig::CJSON PkgConfig::SODIUM OpenMP::OpenMP_C
    LABELS unit TIMEOUT 300)
set(PK_MEZO_TRAINER_LIBS pk_train pk_mezo pk_model pk_store pk_crypto PkgConfig::CJSON PkgConfig::SODIUM
    PkgConfig::SQLITE OpenMP::OpenMP_C)
pk_add_test(test_trainer SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_trainer.c
    LIBS ${PK_MEZO_TRAINER_LIBS} LABELS unit TIMEOUT 300)
# 300 steps of lm fine-tuning on demo/data (the done-when test); same binary, "long" mode
add_test(NAME test_trainer_300 COMMAND test_trainer long)
set_tests_properties(test_trainer_300 PROPERTIES LABELS slow TIMEOUT 900
    ENVIRONMENT "PK_SHARED_DIR=${PK_SHARED_DIR};PK_BUILD_DIR=${CMAKE_BINARY_DIR};OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
# Determinism by construction, through the CLI: --threads 1, 2, 3 and kill -9 + resume
# at another thread count end at one weights hash under OPENBLAS_CORETYPE unset, Haswell and (with
# AVX-512) SkylakeX; resuming under another kernel warns once; replay is exact on any kernel.
# release_only: a few dozen training runs, slow under ASan on two cores; the code they drive runs
# sanitized in test_determinism, test_trainer and the other CLI tests.
pk_add_test(test_determinism_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_determinism_cli.c
    LIBS PkgConfig::CJSON LABELS unit release_only TIMEOUT 240)
add_dependencies(test_determinism_cli pocketllm)
# The estimators (fzoo, hizoo, layer sampling): replay, resume, seed logs, thread counts.
pk_add_test(test_estimator SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_estimator.c
    LIBS ${PK_MEZO_TRAINER_LIBS} LABELS unit TIMEOUT 600)
# train --json's eval events, --lr auto and plot --x through the built pocketllm.
pk_add_test(test_estim_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_estim_cli.c
    LIBS PkgConfig::CJSON LABELS unit TIMEOUT 300)
add_dependencies(test_estim_cli pocketllm)
# 16-bit training with stochastic rounding and LoRA adapters (library level, stories260k)
pk_add_test(test_adapters SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_adapters.c
    LIBS pk_mezo pk_model pk_tokenizer LABELS unit TIMEOUT 300)
# LoRA through the CLI: train, export --adapter / --merged / --seed-log, replay, bench mezo
pk_add_test(test_lora_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_lora_cli.c
    LIBS pk_model PkgConfig::CJSON LABELS unit TIMEOUT 300)
add_dependencies(test_lora_cli pocketllm)
