# A plain clone (the committed tree, no shared/ beside it) builds pocketllm and runs the shortened
# demo on the shipped stories260k from another directory; the install layout finds it too.
# release_only: it builds its own Release pocketllm, so a sanitized build of the suite adds nothing.
pk_add_test(test_plain_clone SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_plain_clone.c
    LIBS PkgConfig::CJSON LABELS unit release_only TIMEOUT 600)
