# cpsim_backend: the CUDA/NCCL/CUPTI half of the real-GPU backend (included only with CPSIM_WITH_CUDA).
find_library(CPSIM_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu)
find_path(CPSIM_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include /usr/include)
find_library(CPSIM_CUPTI_LIBRARY cupti HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 /usr/local/cuda/extras/CUPTI/lib64)
find_path(CPSIM_CUPTI_INCLUDE cupti.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include /usr/local/cuda/extras/CUPTI/include)
if(NOT CPSIM_NCCL_LIBRARY OR NOT CPSIM_NCCL_INCLUDE OR NOT CPSIM_CUPTI_LIBRARY OR NOT CPSIM_CUPTI_INCLUDE)
  message(WARNING "NCCL or CUPTI not found: the real-GPU backend (cpsim run) is not built")
  return()
endif()
set(B src/backend)
add_library(cpsim_backend STATIC ${B}/run.cpp ${B}/rank_main.cpp ${B}/rank_executor.cpp ${B}/nccl_comms.cpp
            ${B}/kernel_profiler.cpp ${B}/compute_kernels.cpp ${B}/result_check.cpp ${B}/helper_kernels.cu
            ${B}/sparse_ops.cpp ${B}/gather_kernels.cu ${B}/message_regions.cpp ${B}/predictor_kernels.cu
            ${B}/merge_kernels.cu ${B}/merge_ops.cpp)
# the one-GPU loopback transport (cpsim run --loopback)
target_sources(cpsim_backend PRIVATE ${B}/loopback_transport.cpp ${B}/loopback_kernels.cu)
target_include_directories(cpsim_backend PUBLIC include PRIVATE ${CPSIM_NCCL_INCLUDE} ${CPSIM_CUPTI_INCLUDE})
target_link_libraries(cpsim_backend PUBLIC cpsim_backend_core CUDA::cudart ${CPSIM_NCCL_LIBRARY} ${CPSIM_CUPTI_LIBRARY})
cpsim_target_options(cpsim_backend)
# the helper kernels need nothing newer, and this CMake does not know nvcc's C++20 flag
set_target_properties(cpsim_backend PROPERTIES CUDA_STANDARD 17)
# the attention kernels, when kernels/ is in the build (it is added before hardware/)
if(TARGET cpsim_kernels)
  target_link_libraries(cpsim_backend PUBLIC cpsim_backend_plans cpsim_kernels)
  target_compile_definitions(cpsim_backend PRIVATE CPSIM_HAVE_KERNELS)
endif()
