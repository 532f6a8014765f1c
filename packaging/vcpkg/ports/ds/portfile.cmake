# vcpkg port of ds. The source comes from the release tarball; for an overlay build from a
# checkout, set DS_SOURCE_DIR in the environment (packaging/vcpkg/test_port_steps.sh does the
# same configure and install by hand, as the vcpkg tool cannot be fetched where this was written).
if(DEFINED ENV{DS_SOURCE_DIR})
  set(SOURCE_PATH "$ENV{DS_SOURCE_DIR}")
else()
  vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO ds-engine/ds
    REF "v${VERSION}"
    SHA512 0
    HEAD_REF main)
endif()

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS FEATURES cuda DS_WITH_CUDA)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DDS_BUILD_TESTS=OFF
    -DDS_BUILD_BENCH=OFF
    -DDS_INSTALL_CMAKEDIR=share/ds)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME ds CONFIG_PATH share/ds)
vcpkg_fixup_pkgconfig()
vcpkg_copy_tools(TOOL_NAMES ds AUTO_CLEAN)

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug/include" "${CURRENT_PACKAGES_DIR}/debug/share")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
