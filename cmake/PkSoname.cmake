# pk_soname(LIB SONAME_VAR PACKAGE_VAR): the SONAME of the shared library file LIB (what dlopen
# must ask for to get the library we build against), read with objdump -p; and the Debian
# package that ships it (dpkg-query -S), or "" where there is no dpkg. Fails if LIB has no SONAME.
function(pk_soname lib soname_var package_var)
    if(NOT CMAKE_OBJDUMP)
        find_program(CMAKE_OBJDUMP objdump)
    endif()
    if(NOT CMAKE_OBJDUMP)
        message(FATAL_ERROR "objdump (binutils) is needed to read the SONAME of ${lib}")
    endif()
    execute_process(COMMAND ${CMAKE_OBJDUMP} -p ${lib} OUTPUT_VARIABLE dump
        RESULT_VARIABLE rc ERROR_QUIET)
    if(NOT rc EQUAL 0 OR NOT dump MATCHES "SONAME[ \t]+([^ \t\r\n]+)")
        message(FATAL_ERROR "cannot read the SONAME of ${lib} (a shared library is needed)")
    endif()
    set(soname ${CMAKE_MATCH_1})
    set(package "")
    find_program(PK_DPKG_QUERY dpkg-query)
    if(PK_DPKG_QUERY)
        get_filename_component(dir ${lib} DIRECTORY)
        get_filename_component(real ${dir}/${soname} REALPATH)
        foreach(path ${dir}/${soname} ${real})
            execute_process(COMMAND ${PK_DPKG_QUERY} -S ${path} OUTPUT_VARIABLE owner
                RESULT_VARIABLE rc ERROR_QUIET)
            # "libcurl4:amd64: /usr/lib/x86_64-linux-gnu/libcurl.so.4"
            if(rc EQUAL 0 AND owner MATCHES "^([^:, \t\r\n]+)")
                set(package ${CMAKE_MATCH_1})
                break()
            endif()
        endforeach()
    endif()
    set(${soname_var} ${soname} PARENT_SCOPE)
    set(${package_var} "${package}" PARENT_SCOPE)
endfunction()
