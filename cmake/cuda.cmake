# cuda.cmake — the optional CUDA backend (src/backend/cuda), included by the
# top-level CMakeLists.txt after lpcore is defined.
#
# LP_CUDA=ON and nvcc found: the .cu code builds into lpcuda (sm_90 machine code
# plus compute_75 PTX, which the driver JIT-compiles on other GPUs), lpcore links
# it and cudart + cuBLAS, and LP_HAVE_CUDA=1 is defined for C code. Otherwise
# src/backend/cuda/cuda_stub.c (always in lpcore) makes lp_backend_cuda_create()
# fail with "built without CUDA".
#
# Independently of nvcc, test_cuda_emu runs the CUDA kernels on a CPU emulator
# (src/backend/cuda/emu_test.cpp) whenever a C++ compiler and cmocka exist.
include(CheckLanguage)

if(LP_CUDA)
  check_language(CUDA)
endif()

if(LP_CUDA AND CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90-real 75-virtual)
  endif()
  enable_language(CXX)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)

  add_library(lpcuda STATIC ${CMAKE_SOURCE_DIR}/src/backend/cuda/cuda_backend.cu)
  set_target_properties(lpcuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
  # The top level's -Wall/-march/-ffp-contract are host-compiler flags nvcc does not
  # take directly: replace them with their -Xcompiler forms.
  set_property(TARGET lpcuda PROPERTY COMPILE_OPTIONS
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-Wno-unknown-pragmas>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
  target_include_directories(lpcuda PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_compile_definitions(lpcuda PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE LP_HAVE_CUDA=1)
  # lpcuda calls lpcore (errors, type traits) and lpcore exposes lpcuda: a static cycle,
  # which CMake resolves by repeating the libraries on the link line.
  target_link_libraries(lpcuda PUBLIC CUDA::cudart CUDA::cublas PRIVATE lpcore)
  target_link_libraries(lpcore PUBLIC lpcuda)
  target_compile_definitions(lpcore PUBLIC LP_HAVE_CUDA=1)
  # lpcore was created before CUDA was enabled: give it the architectures too (CMP0104)
  set_property(TARGET lpcore PROPERTY CUDA_ARCHITECTURES ${CMAKE_CUDA_ARCHITECTURES})
  message(STATUS "llama-pajamas: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES})")
else()
  message(STATUS "llama-pajamas: CUDA backend OFF (LP_CUDA=${LP_CUDA}, nvcc not found or disabled)")
endif()

check_language(CXX)
if(CMAKE_CXX_COMPILER AND CMOCKA_FOUND)
  enable_language(CXX)
  add_executable(test_cuda_emu ${CMAKE_SOURCE_DIR}/src/backend/cuda/emu_test.cpp)
  set_property(TARGET test_cuda_emu PROPERTY COMPILE_OPTIONS -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas)
  set_target_properties(test_cuda_emu PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  target_include_directories(test_cuda_emu PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/src/backend/cuda)
  target_link_libraries(test_cuda_emu PRIVATE lpcore PkgConfig::CMOCKA)
  add_test(NAME test_cuda_emu COMMAND test_cuda_emu)
  set_tests_properties(test_cuda_emu PROPERTIES TIMEOUT 300)
endif()
