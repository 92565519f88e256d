# pk_module(NAME DIR): a static library from every .c directly in DIR (one module = one library).
# Sources are globbed so parallel work on one module never edits this file.
function(pk_module name dir)
    file(GLOB srcs CONFIGURE_DEPENDS ${dir}/*.c)
    add_library(${name} STATIC ${srcs})
    target_include_directories(${name} PUBLIC ${dir})
endfunction()
