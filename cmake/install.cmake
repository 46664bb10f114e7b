# Installs the library, its headers and a package config so that another project can do
#   find_package(tquant REQUIRED)   # also finds Torch
#   target_link_libraries(app PRIVATE tquant::tquant)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The installed library must not depend on this build's folders: its RUNPATH keeps no entry
# inside the source tree (the clone's .venv included), the build folder or the LibTorch it was
# built with; the consumer's program loads LibTorch's and the CUDA libraries instead
# (tquantConfig.cmake, docs/architecture.md "Decisions").
# A PyPI LibTorch: its whole site-packages (the nvidia wheels lie next to torch/).
set(_tquant_torch_home "${TORCH_INSTALL_PREFIX}")
get_filename_component(_tquant_torch_name "${TORCH_INSTALL_PREFIX}" NAME)
if(_tquant_torch_name STREQUAL "torch")
  get_filename_component(_tquant_torch_home "${TORCH_INSTALL_PREFIX}" DIRECTORY)
endif()
get_target_property(_tquant_rpath tquant INSTALL_RPATH)
set(_tquant_install_rpath)
foreach(_entry IN LISTS _tquant_rpath)
  get_filename_component(_real "${_entry}" REALPATH)
  set(_tied FALSE)
  if(NOT IS_ABSOLUTE "${_entry}")  # $ORIGIN
    set(_real "")
  endif()
  foreach(_dir IN ITEMS "${PROJECT_SOURCE_DIR}" "${PROJECT_BINARY_DIR}" "${_tquant_torch_home}")
    get_filename_component(_dir "${_dir}" REALPATH)
    string(FIND "${_real}/" "${_dir}/" _position)
    if(_position EQUAL 0)
      set(_tied TRUE)
    endif()
  endforeach()
  if(NOT _tied)
    list(APPEND _tquant_install_rpath "${_entry}")
  endif()
endforeach()
set_target_properties(tquant PROPERTIES INSTALL_RPATH "${_tquant_install_rpath}")

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
