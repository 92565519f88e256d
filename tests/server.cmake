# Coordinator tests (server side): the server binary on 127.0.0.1 with ephemeral ports.
find_package(Threads REQUIRED)
pk_add_test(test_server SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_server.c
    LIBS pk_srvproto PkgConfig::CJSON PkgConfig::SODIUM Threads::Threads LABELS unit TIMEOUT 120)
add_dependencies(test_server pocketllm-server-mock)

# The load generator against a live coordinator (figures printed; correctness asserted, not speed).
add_test(NAME server_load COMMAND sh ${CMAKE_SOURCE_DIR}/server-mock/loadtest.sh
    ${CMAKE_BINARY_DIR} 5000 4)
set_tests_properties(server_load PROPERTIES LABELS slow TIMEOUT 180)

# Fuzz the coordinator's parsers (task file, --faults, upload bodies).
# libFuzzer adds what it finds to its first corpus folder: give it a copy in the build tree.
file(COPY ${CMAKE_SOURCE_DIR}/server-mock/fuzz-corpus/ DESTINATION
    ${CMAKE_BINARY_DIR}/fuzz-corpus-server)
pk_add_fuzz(test_server_fuzz SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_server_fuzz.c
    LIBS pk_srvcore CORPUS ${CMAKE_BINARY_DIR}/fuzz-corpus-server)
# release_only without PK_FUZZ: the clang libFuzzer build of scripts/test.sh runs this target under
# ASan+UBSan from the same corpus, so the gcc ASan build leaves it out.
if(NOT PK_FUZZ)
    set_tests_properties(test_server_fuzz PROPERTIES LABELS "unit;release_only")
endif()
