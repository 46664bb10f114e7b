# Installs the library, its headers and a package config so that another project can do
#   find_package(tquant REQUIRED)   # also finds Torch
#   target_link_libraries(app PRIVATE tquant::tquant)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS tquant EXPORT tquantTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tquant DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(TQUANT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tquant)
install(EXPORT tquantTargets NAMESPACE tquant:: DESTINATION ${TQUANT_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tquantConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tquantConfig.cmake INSTALL_DESTINATION ${TQUANT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tquantConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tquantConfig.cmake
  ${PROJECT_BINARY_DIR}/tquantConfigVersion.cmake DESTINATION ${TQUANT_CMAKE_DIR})
