# Product area tests: UI helpers, plot, pull, export, demo.
pk_add_test(test_ui SOURCES test_ui.c LIBS pk_cli PkgConfig::CJSON LABELS unit TIMEOUT 60)
pk_add_test(test_plot SOURCES test_plot.c LIBS pk_cli LABELS unit TIMEOUT 60)
pk_add_test(test_pull SOURCES test_pull.c LIBS pk_net PkgConfig::MHD PkgConfig::SODIUM LABELS unit TIMEOUT 120)
# Integration: the CLI against pocketllm-server-mock's hub on loopback.
pk_add_test(test_pull_cli SOURCES test_pull_cli.c LABELS unit TIMEOUT 120)
add_dependencies(test_pull_cli pocketllm pocketllm-server-mock)
# Integration: demo, train, export (f32/f16/seed log), replay, forward, kill -9 + resume, plot
# through the built CLI on stories260k (read in place from PK_SHARED_DIR).
pk_add_test(test_product_cli SOURCES test_product_cli.c LIBS PkgConfig::CJSON LABELS unit TIMEOUT 240)
add_dependencies(test_product_cli pocketllm)
