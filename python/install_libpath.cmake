# Run by cmake --install (python/CMakeLists.txt): writes segforge/_libpath.py
# with the absolute path of the installed libsegforge.so.MAJOR.
foreach(var SF_PY_DIR SF_PY_LIBDIR)
  if(NOT IS_ABSOLUTE "${${var}}")
    set(${var} "${CMAKE_INSTALL_PREFIX}/${${var}}")
  endif()
endforeach()
set(lib "${SF_PY_LIBDIR}/${SF_PY_SONAME}")
set(out "$ENV{DESTDIR}${SF_PY_DIR}/segforge/_libpath.py")
message(STATUS "Installing: ${out} (loads ${lib})")
file(WRITE "${out}" "# Written by cmake --install: the library this package loads.\nLIBRARY = \"${lib}\"\n")
