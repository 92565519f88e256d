# The on-device agent and continual runs: the agent through the built CLI with a faked sysfs
# (battery, heat, load, new data, kill -9 + bit-exact resume, status, stop), train --from-run,
# chained seed logs, data forget --with-runs.
pk_add_test(test_agent_cli SOURCES test_agent_cli.c LIBS PkgConfig::CJSON LABELS unit TIMEOUT 600)
add_dependencies(test_agent_cli pocketllm)
# The same with four kill -9 points instead of one.
add_test(NAME test_agent_cli_slow COMMAND test_agent_cli 4)
set_tests_properties(test_agent_cli_slow PROPERTIES LABELS slow TIMEOUT 600
    ENVIRONMENT "PK_SHARED_DIR=${PK_SHARED_DIR};PK_BUILD_DIR=${CMAKE_BINARY_DIR};OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
# The agent's sync: an unreachable coordinator (failure, backoff), then pocketllm-server-mock with
# faults on at that port (a later sync succeeds), through `agent status`.
pk_add_test(test_agent_sync SOURCES test_agent_sync.c LIBS pk_train PkgConfig::CJSON
    LABELS unit TIMEOUT 240)
add_dependencies(test_agent_sync pocketllm pocketllm-server-mock)
# Device conditions over a faked sysfs; chained seed logs (write, read, refuse).
pk_add_test(test_agent_unit SOURCES test_agent_unit.c LIBS pk_agent pk_mezo LABELS unit TIMEOUT 60)
# What the agent remembers across kill -9 (early stopping: the agent loop in a child that kills
# itself at chosen evals) and keep-best (status without a passphrase, the chained run's parent).
pk_add_test(test_agent_resume SOURCES test_agent_resume.c LIBS pk_agent PkgConfig::CJSON
    LABELS unit TIMEOUT 300)
add_dependencies(test_agent_resume pocketllm)
