# Installation: a standard prefix, as packages and consumers expect it.
#   lib/libds.so.<SOVERSION> (+ links), include/ds_c.h, lib/cmake/ds (ds::ds), lib/pkgconfig/ds.pc,
#   bin/ds. Components: runtime (the library), dev (header, CMake config, pkg-config, .so link),
#   cli (the ds program).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/ds" CACHE STRING
    "Where dsConfig.cmake goes (vcpkg uses share/ds)")

install(TARGETS ds EXPORT dsTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES include/ds_c.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(TARGETS ds-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
# Outside the system prefix the program finds its library next door; system packages need no RPATH.
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set_target_properties(ds-cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
endif()

install(EXPORT dsTargets NAMESPACE ds:: DESTINATION ${DS_INSTALL_CMAKEDIR} COMPONENT dev)
configure_package_config_file(packaging/dsConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/dsConfig.cmake
                              INSTALL_DESTINATION ${DS_INSTALL_CMAKEDIR})
# The version's major number is the ABI's: a consumer asking for 0.x gets any 0.y.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/dsConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dsConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/dsConfigVersion.cmake
        DESTINATION ${DS_INSTALL_CMAKEDIR} COMPONENT dev)
configure_file(packaging/ds.pc.in ${CMAKE_CURRENT_BINARY_DIR}/ds.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ds.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
