# cuda.cmake — the optional CUDA backend (src/backend/cuda), included by the
# top-level CMakeLists.txt after lpcore is defined.
#
# LP_CUDA=ON and nvcc found: cuda_backend.cu builds into the module
# libllama-pajamas-cuda.so next to the binaries (sm_90 machine code plus compute_75
# PTX, which the driver JIT-compiles on other GPUs); only the module links cudart and
# cuBLAS. lpcore and the binaries do not: src/backend/cuda/cuda_loader.c (always in
# lpcore) dlopen()s the module on first use ($LP_CUDA_MODULE, else the executable's
# directory, else ../lib/llama-pajamas next to it), so binaries start without the
# CUDA libraries and `quant info` does not map them. Without nvcc no module is built and
# lp_backend_cuda_create() fails with the loader's one-line message.
#
# The module is linked -z defs with one exported symbol (lp_cuda_module_entry): the
# few lpcore functions it calls come from the host through that entry (why: see
# cuda_loader.c), so no executable needs -rdynamic.
#
# Independently of nvcc, test_cuda_emu runs the CUDA kernels on a CPU emulator
# (src/backend/cuda/emu_test.cpp) whenever a C++ compiler and cmocka exist.
include(CheckLanguage)
option(LP_CUDA_STAMPS "Also build the CUDA module with per-block phase timestamps" OFF)

# The module target `name` written as lib<output>.so next to the binaries.
function(lp_cuda_module name output)
  add_library(${name} MODULE ${CMAKE_SOURCE_DIR}/src/backend/cuda/cuda_backend.cu)
  set_target_properties(${name} PROPERTIES OUTPUT_NAME ${output} PREFIX lib
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR} # next to the binaries: the loader looks there
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY Shared) # the module needs libcudart.so; without it, a clear load error
  # The top level's -Wall/-march/-ffp-contract/-fsanitize are host-compiler flags nvcc does
  # not take directly: replace them (compile and link) with what the module needs.
  set_property(TARGET ${name} PROPERTY COMPILE_OPTIONS
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-Wno-unknown-pragmas>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
  # Export only the entry (everything else binds inside the module, never to the host's
  # lp_fail or lp_backend_cuda_create), and refuse undefined symbols at link time.
  set(map ${CMAKE_BINARY_DIR}/llama-pajamas-cuda.map)
  file(WRITE ${map} "{ global: lp_cuda_module_entry; local: *; };\n")
  set_property(TARGET ${name} PROPERTY LINK_OPTIONS "LINKER:--version-script=${map}" "LINKER:-z,defs")
  set_property(TARGET ${name} PROPERTY LINK_DEPENDS ${map})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_compile_definitions(${name} PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
  target_link_libraries(${name} PRIVATE CUDA::cudart CUDA::cublas) # and not lpcore
endfunction()


# the loader (cuda_loader.c, in lpcore whatever the configuration) uses dlopen
target_link_libraries(lpcore PUBLIC ${CMAKE_DL_LIBS})

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

  lp_cuda_module(lpcuda llama-pajamas-cuda)
  # LP_CUDA_STAMPS=ON: also the module with per-block phase timestamps (lpc_stamps.cuh), a
  # timing tool picked at run time with LP_CUDA_MODULE=build/libllama-pajamas-cuda-stamps.so
  if(LP_CUDA_STAMPS)
    lp_cuda_module(lpcuda_stamps llama-pajamas-cuda-stamps)
    target_compile_definitions(lpcuda_stamps PRIVATE LPC_STAMPS=1)
    add_dependencies(lpcore lpcuda_stamps)
  endif()
  # Building anything on lpcore builds the module, so a binary finds it beside itself.
  add_dependencies(lpcore lpcuda)
  set_property(SOURCE ${CMAKE_SOURCE_DIR}/src/backend/cuda/cuda_loader.c APPEND PROPERTY COMPILE_DEFINITIONS
    LP_CUDA_MODULE_BUILT=1)
  # The decode GEMVs alone on Qwen3-8B shapes (a tuning tool; needs a GPU to run).
  add_executable(cuda_gemv_bench ${CMAKE_SOURCE_DIR}/bench/cuda_gemv_bench.cu)
  set_target_properties(cuda_gemv_bench PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  set_property(TARGET cuda_gemv_bench PROPERTY COMPILE_OPTIONS
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-Wno-unknown-pragmas>)
  set_property(TARGET cuda_gemv_bench PROPERTY LINK_OPTIONS "")
  target_include_directories(cuda_gemv_bench PRIVATE ${CMAKE_SOURCE_DIR}/src)
  # Kernel timeline of graph decode through CUPTI (LD_PRELOAD; bench/cupti_trace.c).
  if(TARGET CUDA::cupti)
    add_library(cupti_trace MODULE ${CMAKE_SOURCE_DIR}/bench/cupti_trace.c)
    target_link_libraries(cupti_trace PRIVATE CUDA::cupti)
  endif()
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
  set_tests_properties(test_cuda_emu PROPERTIES TIMEOUT 1200)
endif()
