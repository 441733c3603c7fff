# frugal_add_module_tests(<module>): one test binary per module and kind, from tests/<module>/*.cpp.
#   *_cuda.cpp -> <module>_cuda_tests, ctest label "gpu" (tests GTEST_SKIP without a usable device)
#   *_mpi.cpp  -> <module>_mpi_tests, label "mpi", run through `mpirun -np 2`
#   otherwise  -> <module>_tests, label "cpu"
include(GoogleTest)
find_package(GTest REQUIRED)

function(_frugal_test_binary name label)
  set(sources ${ARGN})
  if(label STREQUAL "mpi")
    list(APPEND sources ${PROJECT_SOURCE_DIR}/tests/support/main_mpi.cpp)
  else()
    list(APPEND sources ${PROJECT_SOURCE_DIR}/tests/support/main.cpp)
  endif()
  add_executable(${name} ${sources})
  target_link_libraries(${name} PRIVATE frugal frugal_test_support GTest::gtest GTest::gmock)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${FRUGAL_WARNINGS}>)
endfunction()

function(frugal_add_module_tests module)
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${module}/*.cpp)
  set(cuda_sources ${sources})
  list(FILTER cuda_sources INCLUDE REGEX "_cuda\\.cpp$")
  set(mpi_sources ${sources})
  list(FILTER mpi_sources INCLUDE REGEX "_mpi\\.cpp$")
  set(cpu_sources ${sources})
  list(FILTER cpu_sources EXCLUDE REGEX "_(cuda|mpi)\\.cpp$")

  if(cpu_sources)
    _frugal_test_binary(${module}_tests cpu ${cpu_sources})
    gtest_discover_tests(${module}_tests DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
                         PROPERTIES LABELS cpu TIMEOUT 600)
  endif()
  if(cuda_sources AND FRUGAL_HAS_CUDA)
    _frugal_test_binary(${module}_cuda_tests gpu ${cuda_sources})
    gtest_discover_tests(${module}_cuda_tests DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
                         PROPERTIES LABELS gpu TIMEOUT 600)
  endif()
  if(mpi_sources AND FRUGAL_HAS_MPI)
    _frugal_test_binary(${module}_mpi_tests mpi ${mpi_sources})
    add_test(NAME ${module}_mpi_tests
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 --oversubscribe
                     $<TARGET_FILE:${module}_mpi_tests>)
    set_tests_properties(${module}_mpi_tests PROPERTIES LABELS mpi TIMEOUT 600
      ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  endif()
endfunction()
