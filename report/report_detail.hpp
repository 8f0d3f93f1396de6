#pragma once
// Pieces the report's renderers share (report.cpp, traceroute.cpp). Not part of the public API.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace hoptrace::report::report_detail {

std::string proto_name(std::int64_t proto);
bool is_icmp(std::int64_t proto);
// A tuple as the contract spells it: icmp {"src","dst","id"}, others {"src","dst","sport","dport"}.
nlohmann::ordered_json tuple_json(std::int64_t proto, const std::string& src, const std::string& dst,
                                  std::int64_t sport, std::int64_t dport);
// Left-aligned table with one space-padded column per cell; the first row is the header.
std::string table(const std::vector<std::vector<std::string>>& rows, const std::string& indent,
                  const std::vector<bool>& right_aligned);
// What an ICMP error means, in words ("time exceeded", "port unreachable" …); family_proto 1 or 58.
std::string icmp_error_name(std::int64_t family_proto, std::int64_t type, std::int64_t code);

}  // namespace hoptrace::report::report_detail
