# Tests of the sync client (net/): accountant, HTTP wrapper, sync rounds.
find_package(Threads REQUIRED)
pk_add_test(test_dp SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_dp.c
    LIBS pk_net pk_train PkgConfig::SODIUM LABELS unit TIMEOUT 60)
pk_add_test(test_http SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_http.c
    LIBS pk_net pk_train PkgConfig::MHD PkgConfig::SODIUM LABELS unit TIMEOUT 60)
pk_add_test(test_sync_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_sync_proto.c
    LIBS pk_net pk_train pk_store PkgConfig::MHD PkgConfig::CJSON PkgConfig::SODIUM Threads::Threads
    LABELS unit TIMEOUT 120)
pk_add_test(test_sync_fed SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_sync_fed.c
    LIBS pk_net pk_train pk_store PkgConfig::CJSON PkgConfig::SODIUM Threads::Threads LABELS unit
    TIMEOUT 180)
if(TARGET pocketllm-server-mock)
    add_dependencies(test_sync_fed pocketllm-server-mock)
endif()
# Integration: `pocketllm sync` (the CLI) against pocketllm-server-mock on loopback with the real
# stories260k model: three agent homes, concurrent rounds, catch-up, --out, DP, wrong model.
pk_add_test(test_sync_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_sync_cli.c
    LIBS pk_net pk_train PkgConfig::CJSON PkgConfig::SODIUM LABELS unit TIMEOUT 240)
add_dependencies(test_sync_cli pocketllm pocketllm-server-mock)
# Integration: `pocketllm demo --federated`: the demo starts pocketllm-server-mock itself
# and runs one round with two simulated devices on stories260k; the coordinator-missing path.
pk_add_test(test_demo_fed SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_demo_fed.c
    LIBS PkgConfig::CJSON LABELS unit TIMEOUT 180)
add_dependencies(test_demo_fed pocketllm pocketllm-server-mock)
# Only crypto/ calls libsodium. pk_net does not link it, but libsodium reaches every executable
# through pk_crypto, so a direct call from net/ would still link: this check refuses one (grep
# exits 1 when nothing matches, 2 if the sources are missing).
add_test(NAME test_net_no_sodium
    COMMAND sh -c "grep -nE 'sodium|\\b(crypto_[a-z]|randombytes)' *.c *.h include/*.h; test $? -eq 1"
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/net)
set_tests_properties(test_net_no_sodium PROPERTIES LABELS unit)
