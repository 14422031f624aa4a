// Whether this build carries x86 versions of the CPU kernels chosen at run time (GCC on x86-64;
// not under the sanitizers, whose instrumentation the target attributes do not mix with).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define KNETCNN_X86_DISPATCH 1
#endif
