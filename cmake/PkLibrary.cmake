# pk_library(NAME SOURCES a.c b.c ...): one module = one static library. The module's public
# header lives in DIR/include (the only include path other modules see); its private headers
# (*_impl.h) stay in DIR, on the module's own include path. Sources are listed, not globbed.
function(pk_library name)
    cmake_parse_arguments(L "" "" "SOURCES" ${ARGN})
    list(TRANSFORM L_SOURCES PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/)
    add_library(${name} STATIC ${L_SOURCES})
    target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
        PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
endfunction()
