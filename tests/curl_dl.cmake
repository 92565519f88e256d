# libcurl loaded at run time (net/curl_dl.c): unmapped until the first HTTP use, every function
# resolved, pocketllm not linked to it and failing cleanly with a libcurl that lacks curl's API.
find_package(Threads REQUIRED)
add_library(pk_fake_curl SHARED ${CMAKE_CURRENT_SOURCE_DIR}/curl_dl_fake.c)
set_target_properties(pk_fake_curl PROPERTIES PREFIX "" SUFFIX "" OUTPUT_NAME ${PK_CURL_SONAME}
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fake-curl)
pk_add_test(test_curl_dl SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_curl_dl.c
    LIBS pk_net Threads::Threads LABELS unit TIMEOUT 60)
target_include_directories(test_curl_dl SYSTEM PRIVATE ${CURL_INCLUDE_DIRS})
target_compile_definitions(test_curl_dl PRIVATE PK_CURL_SONAME="${PK_CURL_SONAME}"
    PK_CURL_PACKAGE="${PK_CURL_PACKAGE}" PK_FAKE_CURL_DIR="${CMAKE_CURRENT_BINARY_DIR}/fake-curl")
add_dependencies(test_curl_dl pocketllm pk_fake_curl)
target_include_directories(test_curl_dl PRIVATE ${CMAKE_SOURCE_DIR}/net)
