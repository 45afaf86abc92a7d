#pragma once

// SEPP_MULTIVERSION builds a plain function for x86-64-v4 (AVX-512), v3 (AVX2 + FMA) and the baseline, and picks one
// once at load time (GCC's target_clones). Only non-template, non-lambda functions can be cloned: kernels keep their
// hot loops in such leaves and call them from templates.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SEPP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SEPP_MULTIVERSION
#endif
