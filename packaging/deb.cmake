# Debian packages through CPack: cmake --build build --target package (with -DCMAKE_INSTALL_PREFIX=/usr)
#   libds<SOVERSION>   the CPU library
#   libds-dev          header, CMake config, pkg-config, the .so link
#   ds-cli             the ds program
# Depends: computed by dpkg-shlibdeps, plus the links between our own packages.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ds)
set(CPACK_PACKAGE_VENDOR "ds developers")
set(CPACK_PACKAGE_CONTACT "ds developers <ds@ds-engine.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/packaging)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev cli)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Lets dpkg-shlibdeps resolve libds.so.N of this build for the program's package.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${CMAKE_BINARY_DIR})
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://ds-engine.invalid")

set(ds_deb_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME "libds${DS_SOVERSION}")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "DeepSeek-R1 family inference engine (shared library)
ds runs DeepSeek-V3/R1 checkpoints and the R1 distills (Qwen2, Llama)
from Hugging Face folders on the CPU, behind a stable C ABI.")
# Our own shlibs (dependents need this SONAME's package at this version or later) and an
# ldconfig trigger instead of maintainer scripts, as Debian policy asks.
file(WRITE ${CMAKE_BINARY_DIR}/packaging/shlibs "libds ${DS_SOVERSION} libds${DS_SOVERSION} (>= ${PROJECT_VERSION})\n")
file(WRITE ${CMAKE_BINARY_DIR}/packaging/triggers "activate-noawait ldconfig\n")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/packaging/shlibs ${CMAKE_BINARY_DIR}/packaging/triggers)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libds-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libds${DS_SOVERSION} (= ${ds_deb_version})")
set(CPACK_DEBIAN_DEV_DESCRIPTION "DeepSeek-R1 family inference engine (development files)
The C header ds_c.h, the CMake package (find_package(ds), target ds::ds)
and the pkg-config file (ds) for linking libds.")

set(CPACK_DEBIAN_CLI_PACKAGE_NAME ds-cli)
set(CPACK_DEBIAN_CLI_PACKAGE_SECTION science)
set(CPACK_DEBIAN_CLI_PACKAGE_DEPENDS "libds${DS_SOVERSION} (= ${ds_deb_version})")
set(CPACK_DEBIAN_CLI_DESCRIPTION "DeepSeek-R1 family inference engine (command-line program)
The ds program: run, chat, info and bench on Hugging Face model folders,
and make-model to write random-weight models of real shapes.")

# Debian policy: every package ships its copyright and a compressed changelog.
set(ds_changelog_gz ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz)
set(ds_manpage_gz ${CMAKE_BINARY_DIR}/packaging/ds.1.gz)
add_custom_command(OUTPUT ${ds_changelog_gz} ${ds_manpage_gz}
                   COMMAND gzip -9nc ${CMAKE_SOURCE_DIR}/packaging/debian/changelog > ${ds_changelog_gz}
                   COMMAND gzip -9nc ${CMAKE_SOURCE_DIR}/packaging/debian/ds.1 > ${ds_manpage_gz}
                   DEPENDS ${CMAKE_SOURCE_DIR}/packaging/debian/changelog ${CMAKE_SOURCE_DIR}/packaging/debian/ds.1)
add_custom_target(ds_debian_docs ALL DEPENDS ${ds_changelog_gz} ${ds_manpage_gz})
foreach(component runtime dev cli)
  string(TOUPPER ${component} upper)
  set(package ${CPACK_DEBIAN_${upper}_PACKAGE_NAME})
  install(FILES ${CMAKE_SOURCE_DIR}/packaging/debian/copyright DESTINATION share/doc/${package} COMPONENT ${component})
  install(FILES ${ds_changelog_gz} DESTINATION share/doc/${package} COMPONENT ${component})
endforeach()
install(FILES ${ds_manpage_gz} DESTINATION share/man/man1 COMPONENT cli)

include(CPack)
