// The sanitizers' defaults for the instrumented test executable (SEPP_SANITIZE builds), read by their runtimes at
// start-up, so that every way of running the tests (ctest, the test discovery, a debugger) uses the same settings.
// LibTorch is not instrumented: what it allocates and never frees at exit (its operator and kernel registries,
// thread pools) is not sepp's leak, and is suppressed by library; a leak through sepp's code is still reported.

#define SEPP_SANITIZER_HOOK extern "C" __attribute__((visibility("default"), used)) const char*

// An uninstrumented libstdc++/libtorch cannot annotate its std::vector capacity, so container-overflow checks would
// report false positives on vectors that cross the boundary.
SEPP_SANITIZER_HOOK __asan_default_options() {
  return "detect_container_overflow=0:detect_stack_use_after_return=1:check_initialization_order=1:"
         "strict_init_order=1:abort_on_error=0:halt_on_error=1";
}

SEPP_SANITIZER_HOOK __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}

SEPP_SANITIZER_HOOK __lsan_default_suppressions() {
  return "leak:libtorch_cpu.so\n"
         "leak:libc10.so\n"
         "leak:libgomp.so\n"
         "leak:libtorch.so\n";
}
