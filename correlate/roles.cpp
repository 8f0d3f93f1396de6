#include "correlate/roles.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <unordered_map>

namespace hoptrace::correlate {
namespace {

// The interface name in a point name: "c1:eth0" → "eth0", "any/vethab12" → "vethab12".
std::string base_name(const std::string& name) {
    const auto cut = name.find_last_of(":/");
    return cut == std::string::npos ? name : name.substr(cut + 1);
}

// What an interface name says (Docker, CNI, libvirt and LXC name their devices this way), or "".
std::string role_from_name(const std::string& name) {
    const std::string b = base_name(name);
    if (b.starts_with("veth")) return "veth";
    if (b == "docker0" || b.starts_with("br-") || b.starts_with("cni") || b.starts_with("virbr") ||
        b.starts_with("lxcbr") || b == "cbr0" || (b.size() > 2 && b.starts_with("br") && std::isdigit(b[2]) != 0))
        return "bridge";
    return "";
}

struct PairStats {
    std::uint64_t same_frames = 0;  // one fingerprint, tuple and TTL at both: one L2 frame
    std::uint64_t routed = 0;       // one fingerprint, TTL one apart: a router between them
};

class UnionFind {
public:
    explicit UnionFind(std::size_t n) : m_parent(n) { std::iota(m_parent.begin(), m_parent.end(), 0U); }
    std::size_t find(std::size_t x) {
        while (m_parent[x] != x) x = m_parent[x] = m_parent[m_parent[x]];
        return x;
    }
    void unite(std::size_t a, std::size_t b) { m_parent[find(a)] = find(b); }

private:
    std::vector<std::size_t> m_parent;
};

// The mean time to the uplink; a point that never saw the uplink's packets is farthest.
std::int64_t mean(const std::vector<std::int64_t>& v) {
    if (v.empty()) return std::numeric_limits<std::int64_t>::max();
    long double sum = 0;
    for (const std::int64_t x : v) sum += static_cast<long double>(x);
    return static_cast<std::int64_t>(sum / static_cast<long double>(v.size()));
}

}  // namespace

std::vector<RoleGuess> infer_roles(std::span<const Sighting> sightings, std::span<const std::uint32_t> points,
                                   std::span<const std::string> names) {
    const std::size_t n = points.size();
    std::unordered_map<std::uint32_t, std::size_t> slot;
    for (std::size_t i = 0; i < n; ++i) slot[points[i]] = i;

    // Pairs of sightings of one packet at two points: by fingerprint, close in time. Big groups (floods of one
    // shape) add nothing a smaller one does not, and are skipped to keep this linear.
    constexpr std::size_t k_max_group = 32;
    constexpr std::int64_t k_close_ns = 100'000'000;
    std::vector<std::uint32_t> order(sightings.size());
    std::iota(order.begin(), order.end(), 0U);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        if (sightings[a].fingerprint != sightings[b].fingerprint)
            return sightings[a].fingerprint < sightings[b].fingerprint;
        return sightings[a].ts_ns < sightings[b].ts_ns;
    });
    std::map<std::pair<std::size_t, std::size_t>, PairStats> pairs;  // (lower slot, higher slot)
    std::vector<std::vector<std::int64_t>> to_uplink(n);             // filled once uplinks are known
    struct Routed {
        std::size_t high_ttl;
        std::size_t low_ttl;
        std::int64_t dt;
    };
    std::vector<Routed> routed;
    for (std::size_t begin = 0; begin < order.size();) {
        std::size_t end = begin + 1;
        while (end < order.size() && sightings[order[end]].fingerprint == sightings[order[begin]].fingerprint) ++end;
        if (sightings[order[begin]].fingerprint != 0 && end - begin <= k_max_group) {
            for (std::size_t x = begin; x < end; ++x) {
                for (std::size_t y = x + 1; y < end; ++y) {
                    const Sighting& a = sightings[order[x]];
                    const Sighting& b = sightings[order[y]];
                    if (b.ts_ns - a.ts_ns > k_close_ns) break;
                    const auto ia = slot.find(a.point);
                    const auto ib = slot.find(b.point);
                    if (ia == slot.end() || ib == slot.end() || ia->second == ib->second) continue;
                    auto& stats = pairs[std::minmax(ia->second, ib->second)];
                    if (a.ttl == b.ttl && a.tuple == b.tuple) {
                        ++stats.same_frames;
                    } else if (std::abs(int{a.ttl} - int{b.ttl}) == 1) {
                        ++stats.routed;
                        const bool a_high = a.ttl > b.ttl;
                        routed.push_back({a_high ? ia->second : ib->second, a_high ? ib->second : ia->second,
                                          std::abs(b.ts_ns - a.ts_ns)});
                    }
                }
            }
        }
        begin = end;
    }

    // L2 segments: points that share frames.
    UnionFind segments(n);
    for (const auto& [key, stats] : pairs)
        if (stats.same_frames > 0) segments.unite(key.first, key.second);
    std::vector<std::size_t> segment_size(n, 0);
    for (std::size_t i = 0; i < n; ++i) ++segment_size[segments.find(i)];

    std::vector<RoleGuess> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        out[i].point = points[i];
        out[i].role = "other";
    }
    // The uplink: alone on its segment, and sees the packets of a larger segment one router away.
    std::vector<bool> uplink(n, false);
    for (const auto& [key, stats] : pairs) {
        if (stats.routed == 0) continue;
        for (const auto& [me, other] : {std::pair{key.first, key.second}, std::pair{key.second, key.first}}) {
            if (segment_size[segments.find(me)] == 1 && segment_size[segments.find(other)] >= 2 && !uplink[me]) {
                uplink[me] = true;
                out[me].role = "uplink";
                out[me].evidence = "traffic: sees the packets of " + names[other] + " one router away (TTL one apart)";
            }
        }
    }
    // On a segment routed to an uplink: the time to the uplink orders the points (the bridge is nearest).
    for (const Routed& r : routed) {
        if (uplink[r.low_ttl] && !uplink[r.high_ttl]) to_uplink[r.high_ttl].push_back(r.dt);
        if (uplink[r.high_ttl] && !uplink[r.low_ttl]) to_uplink[r.low_ttl].push_back(r.dt);
    }
    std::vector<std::int64_t> distance(n);
    for (std::size_t i = 0; i < n; ++i) distance[i] = mean(to_uplink[i]);
    // Segments with at least one point routed to an uplink, and all their points.
    std::set<std::size_t> routed_segments;
    for (std::size_t i = 0; i < n; ++i)
        if (!uplink[i] && !to_uplink[i].empty() && segment_size[segments.find(i)] >= 2)
            routed_segments.insert(segments.find(i));
    std::map<std::size_t, std::vector<std::size_t>> members;  // segment root -> its points
    for (std::size_t i = 0; i < n; ++i)
        if (!uplink[i] && routed_segments.contains(segments.find(i))) members[segments.find(i)].push_back(i);
    auto shared = [&](std::size_t a, std::size_t b) {
        const auto it = pairs.find(std::minmax(a, b));
        return it == pairs.end() ? 0 : it->second.same_frames;
    };
    for (auto& [root, list] : members) {
        std::stable_sort(list.begin(), list.end(),
                         [&](std::size_t a, std::size_t b) { return distance[a] < distance[b]; });
        // A point named like a bridge is the bridge; otherwise the one nearest in time to the uplink.
        const auto named =
            std::find_if(list.begin(), list.end(), [&](std::size_t i) { return role_from_name(names[i]) == "bridge"; });
        if (named != list.end()) std::rotate(list.begin(), named, named + 1);
        const std::size_t bridge = list.front();
        out[bridge].role = "bridge";
        out[bridge].evidence = named != list.end() ? "name '" + base_name(names[bridge]) + "'"
                                                   : "traffic: of the points that share its frames, nearest in time "
                                                     "to the uplink";
        std::vector<bool> paired(n, false);
        for (std::size_t k = 1; k < list.size(); ++k) {
            const std::size_t p = list[k];
            if (paired[p]) continue;
            std::size_t best = n;
            for (std::size_t q : list)
                if (q != bridge && q != p && !paired[q] && shared(p, q) > 0 &&
                    (best == n || shared(p, q) > shared(p, best)))
                    best = q;
            paired[p] = true;
            if (best == n) {
                out[p].role = "container";
                out[p].evidence =
                    "traffic: shares frames with the bridge " + names[bridge] + " only, farther from the uplink";
                continue;
            }
            paired[best] = true;
            bool p_farther = distance[p] > distance[best] || (distance[p] == distance[best] && p < best);
            if (role_from_name(names[p]) == "veth") p_farther = false;
            if (role_from_name(names[best]) == "veth") p_farther = true;
            const std::size_t container = p_farther ? p : best;
            const std::size_t veth = p_farther ? best : p;
            out[container].role = "container";
            out[container].evidence = "traffic: sees the same frames as " + names[veth] + ", farther from the uplink";
            out[veth].role = "veth";
            out[veth].evidence =
                "traffic: sees the same frames as " + names[container] + ", nearer the bridge " + names[bridge];
        }
    }
    // A name says it more surely than timing does.
    for (std::size_t i = 0; i < n; ++i) {
        const std::string hinted = role_from_name(names[i]);
        if (!hinted.empty()) {
            out[i].role = hinted;
            out[i].evidence = "name '" + base_name(names[i]) + "'";
        } else if (out[i].role == "other") {
            out[i].evidence = "nothing tells: no name hint, no frames shared with a point routed to an uplink";
        }
    }
    return out;
}

}  // namespace hoptrace::correlate
