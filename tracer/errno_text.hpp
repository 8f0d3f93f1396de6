#pragma once
// The text of an errno value, thread-safe (strerror_r; std::strerror may share one buffer between threads).

#include <string.h>

#include <string>

namespace hoptrace {

inline std::string errno_text(int error) {
    char buffer[128] = {};
    // The GNU strerror_r (glibc with _GNU_SOURCE, which g++ defines) returns the text, in `buffer` or static.
    return ::strerror_r(error, buffer, sizeof buffer);
}

}  // namespace hoptrace
