# libpocketllm (api/, include/pocketllm.h): the API's own tests, the exported symbols of the
# shared library, examples/minimal.c built in the tree and against an installed copy.
pk_add_test(test_api SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_api.c
    LIBS pk_api PkgConfig::SQLITE Threads::Threads LABELS unit TIMEOUT 180)

# `nm -D` of libpocketllm.so: every defined dynamic symbol is pocketllm_* (the linker's version
# node POCKETLLM_0 aside), and the API is there.
add_test(NAME test_api_exports COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/api_exports.sh
    ${CMAKE_NM} $<TARGET_FILE:pocketllm_shared> ${PK_API_STATIC_LIB})
set_tests_properties(test_api_exports PROPERTIES LABELS unit TIMEOUT 60)

# examples/minimal.c linked with the shared library of this build, run on the shipped model.
add_executable(example_minimal ${CMAKE_SOURCE_DIR}/examples/minimal.c)
target_link_libraries(example_minimal PRIVATE pocketllm_shared)
add_test(NAME test_api_minimal COMMAND sh -c
    "rm -rf \"$1\" && \"$0\" \"$1\" ${PK_DEMO_MODEL_DIR} && rm -rf \"$1\""
    $<TARGET_FILE:example_minimal> ${CMAKE_BINARY_DIR}/example-minimal-home)
set_tests_properties(test_api_minimal PROPERTIES LABELS unit TIMEOUT 120
    PASS_REGULAR_EXPRESSION "step 20/20 loss [0-9.]+.*run 1: 20 steps"
    ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")

# `cmake --install` into a temporary prefix, then minimal.c built against the installed
# library through pkg-config (shared, and static with --static) and through find_package, and
# each run. Installs the binary and the models too, so the install itself is checked.
add_test(NAME test_api_install COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/api_install.sh
    ${CMAKE_COMMAND} ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR} ${CMAKE_C_COMPILER})
# release_only: under the sanitizers the installed library needs their runtime loaded first,
# which a plain program built against it does not do.
set_tests_properties(test_api_install PROPERTIES LABELS "unit;release_only" TIMEOUT 600
    ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
