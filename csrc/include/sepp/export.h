#pragma once

// Symbols of libsepp that applications may use. The library is built with hidden visibility.
#if defined(_WIN32)
#if defined(SEPP_BUILDING_LIBRARY)
#define SEPP_API __declspec(dllexport)
#else
#define SEPP_API __declspec(dllimport)
#endif
#else
#define SEPP_API __attribute__((visibility("default")))
#endif
