#pragma once
/// Portability macros shared by host and device code. Plain C++: no CUDA header is included.

#if defined(__CUDACC__)
#define FRUGAL_HOST_DEVICE __host__ __device__
#define FRUGAL_DEVICE __device__
#else
#define FRUGAL_HOST_DEVICE
#define FRUGAL_DEVICE
#endif

#define FRUGAL_INLINE FRUGAL_HOST_DEVICE inline
