#include "correlate/rule_ties.hpp"

#include "store/rule_traces.hpp"
#include "tracer/packet.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <vector>

namespace hoptrace::correlate {
namespace {

constexpr std::uint32_t k_none = std::numeric_limits<std::uint32_t>::max();

struct HeaderKey {
    Tuple tuple;  // an echo's dport is 0 here, as in the trace
    std::uint16_t ip_id = 0;
    bool operator==(const HeaderKey&) const = default;
};
struct HeaderKeyHash {
    std::size_t operator()(const HeaderKey& k) const noexcept {
        return TupleHash{}(k.tuple) * 0x9e3779b97f4a7c15ULL ^ k.ip_id;
    }
};

HeaderKey key_of(Tuple t, std::uint16_t ip_id) {
    if (t.is_icmp()) t.dport = 0;
    return {t, ip_id};
}
HeaderKey key_of(const store::TracedHeader& h) {
    return key_of(Tuple{h.proto, h.src, h.dst, h.sport, h.dport}, h.ip_id);
}

}  // namespace

std::uint64_t tie_rule_traces(store::Database& db, std::span<const Sighting> sightings, const Journeys& journeys,
                              const Analysis& analysis, std::int64_t window_ns) {
    const std::vector<store::TracedHeader> headers = store::rule_trace_headers(db);
    if (headers.empty()) return 0;
    // Only the sightings whose headers some walk saw, by key, in time order.
    std::unordered_map<HeaderKey, std::vector<std::uint32_t>, HeaderKeyHash> by_key;
    for (const store::TracedHeader& h : headers) by_key.try_emplace(key_of(h));
    for (std::uint32_t i = 0; i < sightings.size(); ++i) {
        const Sighting& s = sightings[i];
        if (auto it = by_key.find(key_of(s.tuple, s.ip_id)); it != by_key.end()) it->second.push_back(i);
    }
    for (auto& [key, list] : by_key)
        std::sort(list.begin(), list.end(),
                  [&](std::uint32_t a, std::uint32_t b) { return sightings[a].ts_ns < sightings[b].ts_ns; });
    std::vector<std::uint32_t> journey_of(sightings.size(), k_none);
    for (std::uint32_t j = 0; j < journeys.count(); ++j) {
        for (const std::uint32_t m : journeys.of(j)) journey_of[m] = j;
        if (j < analysis.observers.count())
            for (const std::uint32_t o : analysis.observers.of(j)) journey_of[o] = j;
    }
    // Per walk, the journeys its headers fit: exactly (same length) and, apart, by a first fragment.
    std::map<std::uint64_t, std::pair<std::set<std::uint32_t>, std::set<std::uint32_t>>> fits;
    for (const store::TracedHeader& h : headers) {
        auto& [exact, by_fragment] = fits[h.walk];
        const auto& list = by_key.at(key_of(h));
        auto it = std::lower_bound(list.begin(), list.end(), h.ts_ns - window_ns,
                                   [&](std::uint32_t i, std::int64_t t) { return sightings[i].ts_ns < t; });
        for (; it != list.end() && sightings[*it].ts_ns <= h.ts_ns + window_ns; ++it) {
            const Sighting& s = sightings[*it];
            if (journey_of[*it] == k_none) continue;
            if (s.ip_len == h.ip_len) exact.insert(journey_of[*it]);
            else if ((s.flags & packet_flag::k_fragment) != 0 && s.frag_offset == 0 && s.ip_len < h.ip_len)
                by_fragment.insert(journey_of[*it]);
        }
    }
    std::vector<std::pair<std::uint64_t, std::int64_t>> tied;
    for (const auto& [walk, found] : fits) {
        const auto& chosen = found.first.empty() ? found.second : found.first;
        if (chosen.size() == 1) tied.emplace_back(walk, static_cast<std::int64_t>(*chosen.begin()) + 1);
    }
    store::set_rule_trace_journeys(db, tied);
    return tied.size();
}

}  // namespace hoptrace::correlate
