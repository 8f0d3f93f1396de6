#include "report/csv.hpp"

#include "report/format.hpp"
#include "report/model.hpp"

#include <map>
#include <string>
#include <string_view>

namespace hoptrace::report {
namespace {

// RFC 4180 quoting; a cell a spreadsheet would take for a formula (starting with = + - @, tab or CR) gets a leading
// apostrophe first (OWASP's rule against CSV injection).
std::string csv_field(const std::string& value) {
    std::string v = value;
    if (!v.empty() && std::string_view("=+-@\t\r").find(v.front()) != std::string_view::npos) v.insert(0, 1, '\'');
    if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
    std::string out = "\"";
    for (char c : v) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

}  // namespace

void write_csv(const store::Database& db, std::ostream& out, const std::optional<FlowFilter>& flows) {
    const auto selected = flows ? select_flows(db, *flows) : std::unordered_set<std::int64_t>{};
    std::map<std::int64_t, std::string> names;  // already quoted
    for (const Point& p : load_points(db)) names.emplace(p.id, csv_field(p.name));
    out << "flow_id,proto,direction,journey_id,from,to,from_ts_ns,to_ts_ns,latency_ns\n";
    for_each_hop_sample(db, [&](const HopSample& s) {
        if (flows && !selected.contains(s.flow)) return;
        out << s.flow << ',' << proto_name(s.proto) << ',' << correlate::to_string(s.direction) << ',' << s.journey
            << ',' << names[s.from_point] << ',' << names[s.to_point] << ',' << s.from_ts_ns << ',' << s.to_ts_ns << ','
            << (s.to_ts_ns - s.from_ts_ns) << '\n';
    });
}

}  // namespace hoptrace::report
