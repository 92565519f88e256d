# Coordinator tests (issue 5, server side): the server binary on 127.0.0.1 with ephemeral ports.
pk_add_test(test_server SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_server.c
    LIBS pk_srvproto PkgConfig::CJSON PkgConfig::SODIUM LABELS unit TIMEOUT 120)
add_dependencies(test_server pocketllm-server-mock)
