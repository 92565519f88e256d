# libpocketllm (api/, include/pocketllm.h): the API's own tests, the exported symbols of the
# shared library, examples/minimal.c built in the tree and against an installed copy.
pk_add_test(test_api SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_api.c
    LIBS pk_api PkgConfig::SQLITE Threads::Threads LABELS unit TIMEOUT 180)

# `nm -D` of libpocketllm.so: every defined dynamic symbol is pocketllm_* (the linker's version
# node POCKETLLM_0 aside), and they are exactly the functions pocketllm.h declares.
add_test(NAME test_api_exports COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/api_exports.sh
    ${CMAKE_NM} $<TARGET_FILE:pocketllm_shared> ${PK_API_STATIC_LIB}
    ${CMAKE_SOURCE_DIR}/include/pocketllm.h)
set_tests_properties(test_api_exports PROPERTIES LABELS unit TIMEOUT 60)

# examples/minimal.c linked with the shared library of this build, run on the shipped model in a
# fresh home (the fixture removes the last one; the example itself is the test command, so a
# cross build runs it through its emulator).
add_executable(example_minimal ${CMAKE_SOURCE_DIR}/examples/minimal.c)
target_link_libraries(example_minimal PRIVATE pocketllm_shared)
set(PK_EXAMPLE_HOME ${CMAKE_BINARY_DIR}/example-minimal-home)
add_test(NAME test_api_minimal_clean COMMAND ${CMAKE_COMMAND} -E rm -rf ${PK_EXAMPLE_HOME})
set_tests_properties(test_api_minimal_clean PROPERTIES LABELS unit FIXTURES_SETUP example_home)
add_test(NAME test_api_minimal COMMAND example_minimal ${PK_EXAMPLE_HOME} ${PK_DEMO_MODEL_DIR})
set_tests_properties(test_api_minimal PROPERTIES LABELS unit TIMEOUT 120
    FIXTURES_REQUIRED example_home
    PASS_REGULAR_EXPRESSION "step 20/20 loss [0-9.]+.*run 1: 20 steps.*\nPip"
    ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")

# `cmake --install` into a temporary prefix, then minimal.c built against the installed
# library through pkg-config (shared, and static with --static) and through find_package, and
# each run. Installs the binary and the models too, so the install itself is checked.
# release_only: under the sanitizers the installed library needs their runtime loaded first,
# which a plain program built against it does not do. Not in a cross build (it compiles and runs
# programs against the installed tree with the host's tools).
if(NOT CMAKE_CROSSCOMPILING)
    add_test(NAME test_api_install COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/api_install.sh
        ${CMAKE_COMMAND} ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR} ${CMAKE_C_COMPILER})
    set_tests_properties(test_api_install PROPERTIES LABELS "unit;release_only" TIMEOUT 600
        ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
endif()
