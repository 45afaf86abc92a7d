#pragma once

// How an options struct lists its fields by name: the one table that the Python bindings read to build a module from
// keyword arguments and to report its options back. C++ users set options through the TORCH_ARG setters as usual.

namespace sepp {

/// How an option appears to Python (in C++ it is always the plain field).
enum class OptionKind {
  Plain,
  /// Must be given: there is no meaningful default (a block's `inplanes`, an SE block's `channels`).
  Required,
  /// An int64 option whose 0 means "not set": None in Python (`rd_channels`, `rd_divisor`).
  ZeroIsNone,
};

}  // namespace sepp
