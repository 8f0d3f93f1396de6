#pragma once
// `hoptrace export`: the stored capture as one pcapng file for Wireshark. One interface per point (in path
// order: if_name is the point's name, if_description its role, namespace and interface), every packet with
// its original bytes and nanosecond timestamp, in time order across the points, and a comment on each
// saying which journey it is, which hop of how many, how long since the previous point, and what NAT
// rewrote on the way from there:
//   journey 12 (flow 3, forward), hop 4 of 4: docker0 → uplink after 27.5 µs; rewrote src 172.17.0.2 → 192.168.43.116
//
// Reads the store only (the packets' stored fields, never their bytes). Streams: memory does not grow with
// the number of packets.

#include "report/flow_filter.hpp"
#include "store/database.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace hoptrace::report {

struct ExportOptions {
    std::string application;          // the section's shb_userappl, e.g. "hoptrace 0.1.0"
    std::optional<FlowFilter> flows;  // only the packets of journeys of the flows it selects
};

struct ExportSummary {
    std::uint32_t interfaces = 0;
    std::uint64_t packets = 0;
    std::uint64_t flows = 0;           // flows in the database
    std::uint64_t flows_selected = 0;  // flows the filter selected (= flows without a filter)
};

// Writes `path`. An I/O failure is one line naming `path` (the partial file is removed); store errors
// throw store::Error (the partial file is removed too).
tl::expected<ExportSummary, std::string> export_pcapng(const store::Database& db, const std::string& path,
                                                       const ExportOptions& options);

}  // namespace hoptrace::report
