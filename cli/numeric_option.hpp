#pragma once
// The range check every numeric option of every subcommand goes through. Boost.Program_options parses
// "nan", "inf" and "1e300" into a double, and "-1" into an unsigned integer as its two's complement, so a
// parsed value says nothing about its range: each option names its bounds here, once, after parsing. A value
// outside them (or not finite) is a UsageError naming the option (exit 2), before anything is opened.

#include "cli/command.hpp"

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>

namespace hoptrace::cli {

// Checks option `name` (without the dashes) when it is in `vm`, given or defaulted: finite, min <= value <= max.
// `unit` ("ms", "seconds", …) completes the message: "--max-hop-gap-ms nan: not a number of ms between 0.001 and
// 3600000". T is the option's type as declared with po::value<T>.
template <typename T>
void check_range(const po::variables_map& vm, const std::string& name, T min, T max, const std::string& unit) {
    static_assert(std::is_arithmetic_v<T>);
    const auto it = vm.find(name);
    if (it == vm.end() || it->second.empty()) return;
    const T value = it->second.as<T>();
    bool ok = value >= min && value <= max;  // false for NaN
    if constexpr (std::is_floating_point_v<T>) ok = ok && std::isfinite(value);
    if (ok) return;
    std::ostringstream message;  // "nan", "inf", "1e+300", "18446744073709551615"; 3600000, not 3.6e+06
    message.precision(15);
    message << "--" << name << " " << value << ": not a number of " << unit << " between " << min << " and " << max;
    throw UsageError(message.str());
}

// --max-hop-gap-ms of import and correlate: at least 1 µs, at most an hour (in ns it fits an int64 with room).
inline void check_max_hop_gap(const po::variables_map& vm) {
    check_range(vm, "max-hop-gap-ms", 0.001, 3'600'000.0, "ms");
}

}  // namespace hoptrace::cli
