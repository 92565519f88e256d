# The cross-architecture contract (DESIGN 4): golden z bits and digests on every code path, the
# bundle's reference logits, the weights hash of a fixed step log replayed (committed from
# x86-64), a store and a seed log written and read back. scripts/test-arm64.sh also runs
# `test_golden write DIR` on one architecture and `test_golden read DIR` on the other. It reads
# the test-vector bundle, hence the label shared (beside the list in tests/CMakeLists.txt).
pk_add_test(test_golden SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_golden.c
    LIBS pk_mezo pk_model pk_store pk_crypto PkgConfig::CJSON OpenMP::OpenMP_C LABELS unit shared
    TIMEOUT 300)
target_include_directories(test_golden PRIVATE ${CMAKE_SOURCE_DIR}/model) # forward_impl.h
# Every vector path (z: AVX-512 or NEON; f16/bf16 widening: NEON) equals the generic C on many
# inputs, bit for bit; prints each path's time per value (not asserted).
pk_add_test(test_simd SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_simd.c LIBS pk_model LABELS unit
    TIMEOUT 120)
