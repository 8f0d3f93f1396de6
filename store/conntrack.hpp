#pragma once
// The `conntrack` table: the kernel's NAT state as dumped at the start and the end of a live capture.

#include "store/database.hpp"
#include "tracer/conntrack.hpp"

#include <cstdint>
#include <span>
#include <string_view>

namespace hoptrace::store {

// Inserts one dump (`event` "dump-start" or "dump-end", taken at `ts_ns`), in one transaction.
void insert_conntrack(Database& db, std::int64_t ts_ns, std::string_view event,
                      std::span<const ConntrackEntry> entries);

}  // namespace hoptrace::store
