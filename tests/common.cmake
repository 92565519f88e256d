# common/: the shared helpers (pk_sleep and the clean-stop flag).
pk_add_test(test_common SOURCES test_common.c LABELS unit TIMEOUT 60)
