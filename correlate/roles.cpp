#include "correlate/roles.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <unordered_map>
#include <utility>

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

using Pairs = std::map<std::pair<std::size_t, std::size_t>, PairStats>;  // (lower slot, higher slot)

// One packet seen one router apart: at the point with the higher TTL, then (or before) at the lower one.
struct Routed {
    std::size_t high_ttl;
    std::size_t low_ttl;
    std::int64_t dt;
};

// Pairs of sightings of one packet at two points: by fingerprint, close in time. Big groups (floods of one shape)
// add nothing a smaller one does not, and are skipped to keep this linear.
void observe_pairs(std::span<const Sighting> sightings, const std::unordered_map<std::uint32_t, std::size_t>& slot,
                   Pairs& pairs, std::vector<Routed>& routed) {
    constexpr std::size_t k_max_group = 32;
    constexpr std::int64_t k_close_ns = 100'000'000;
    std::vector<std::uint32_t> order(sightings.size());
    std::iota(order.begin(), order.end(), 0U);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        if (sightings[a].fingerprint != sightings[b].fingerprint)
            return sightings[a].fingerprint < sightings[b].fingerprint;
        return sightings[a].ts_ns < sightings[b].ts_ns;
    });
    auto pair_up = [&](const Sighting& a, const Sighting& b) {
        const auto ia = slot.find(a.point);
        const auto ib = slot.find(b.point);
        if (ia == slot.end() || ib == slot.end() || ia->second == ib->second) return;
        auto& stats = pairs[std::minmax(ia->second, ib->second)];
        if (a.ttl == b.ttl && a.tuple == b.tuple) {
            ++stats.same_frames;
        } else if (std::abs(int{a.ttl} - int{b.ttl}) == 1) {
            ++stats.routed;
            const bool a_high = a.ttl > b.ttl;
            routed.push_back(
                {a_high ? ia->second : ib->second, a_high ? ib->second : ia->second, std::abs(b.ts_ns - a.ts_ns)});
        }
    };
    for (std::size_t begin = 0; begin < order.size();) {
        std::size_t end = begin + 1;
        while (end < order.size() && sightings[order[end]].fingerprint == sightings[order[begin]].fingerprint) ++end;
        if (sightings[order[begin]].fingerprint != 0 && end - begin <= k_max_group)
            for (std::size_t x = begin; x < end; ++x)
                for (std::size_t y = x + 1; y < end; ++y) {
                    if (sightings[order[y]].ts_ns - sightings[order[x]].ts_ns > k_close_ns) break;
                    pair_up(sightings[order[x]], sightings[order[y]]);
                }
        begin = end;
    }
}

// What the traffic says of n points (slots): which share L2 frames (segments), which is an uplink, and how far in
// time each is from one.
class RoleInference {
public:
    RoleInference(std::size_t n, std::span<const std::string> names, Pairs pairs, std::vector<Routed> routed,
                  std::vector<RoleGuess>& out)
        : m_n(n),
          m_names(names),
          m_pairs(std::move(pairs)),
          m_routed(std::move(routed)),
          m_segments(n),
          m_segment_size(n, 0),
          m_uplink(n, false),
          m_distance(n),
          m_out(out) {}

    void run() {
        // L2 segments: points that share frames.
        for (const auto& [key, stats] : m_pairs)
            if (stats.same_frames > 0) m_segments.unite(key.first, key.second);
        for (std::size_t i = 0; i < m_n; ++i) ++m_segment_size[m_segments.find(i)];
        find_uplinks();
        for (auto& [root, list] : routed_segments()) assign_segment(list);
    }

private:
    // The uplink: alone on its segment, and sees the packets of a larger segment one router away.
    void find_uplinks() {
        for (const auto& [key, stats] : m_pairs) {
            if (stats.routed == 0) continue;
            for (const auto& [me, other] : {std::pair{key.first, key.second}, std::pair{key.second, key.first}}) {
                if (m_segment_size[m_segments.find(me)] == 1 && m_segment_size[m_segments.find(other)] >= 2 &&
                    !m_uplink[me]) {
                    m_uplink[me] = true;
                    m_out[me].role = "uplink";
                    m_out[me].evidence =
                        "traffic: sees the packets of " + m_names[other] + " one router away (TTL one apart)";
                }
            }
        }
    }

    // The segments with at least one point routed to an uplink, each with its points nearest the uplink first.
    std::map<std::size_t, std::vector<std::size_t>> routed_segments() {
        std::vector<std::vector<std::int64_t>> to_uplink(m_n);
        for (const Routed& r : m_routed) {
            if (m_uplink[r.low_ttl] && !m_uplink[r.high_ttl]) to_uplink[r.high_ttl].push_back(r.dt);
            if (m_uplink[r.high_ttl] && !m_uplink[r.low_ttl]) to_uplink[r.low_ttl].push_back(r.dt);
        }
        for (std::size_t i = 0; i < m_n; ++i) m_distance[i] = mean(to_uplink[i]);
        std::set<std::size_t> routed;
        for (std::size_t i = 0; i < m_n; ++i)
            if (!m_uplink[i] && !to_uplink[i].empty() && m_segment_size[m_segments.find(i)] >= 2)
                routed.insert(m_segments.find(i));
        std::map<std::size_t, std::vector<std::size_t>> members;  // segment root -> its points
        for (std::size_t i = 0; i < m_n; ++i)
            if (!m_uplink[i] && routed.contains(m_segments.find(i))) members[m_segments.find(i)].push_back(i);
        for (auto& [root, list] : members)
            std::stable_sort(list.begin(), list.end(),
                             [&](std::size_t a, std::size_t b) { return m_distance[a] < m_distance[b]; });
        return members;
    }

    [[nodiscard]] std::uint64_t shared(std::size_t a, std::size_t b) const {
        const auto it = m_pairs.find(std::minmax(a, b));
        return it == m_pairs.end() ? 0 : it->second.same_frames;
    }

    // On a segment routed to an uplink: a point named like a bridge is the bridge, otherwise the one nearest in
    // time to the uplink; the others pair up by the frames they share, the farther of a pair the container.
    void assign_segment(std::vector<std::size_t>& list) {
        const auto named = std::find_if(list.begin(), list.end(),
                                        [&](std::size_t i) { return role_from_name(m_names[i]) == "bridge"; });
        if (named != list.end()) std::rotate(list.begin(), named, named + 1);
        const std::size_t bridge = list.front();
        m_out[bridge].role = "bridge";
        m_out[bridge].evidence = named != list.end() ? "name '" + base_name(m_names[bridge]) + "'"
                                                     : "traffic: of the points that share its frames, nearest in "
                                                       "time to the uplink";
        std::vector<bool> paired(m_n, false);
        for (std::size_t k = 1; k < list.size(); ++k) {
            const std::size_t p = list[k];
            if (paired[p]) continue;
            std::size_t best = m_n;
            for (std::size_t q : list)
                if (q != bridge && q != p && !paired[q] && shared(p, q) > 0 &&
                    (best == m_n || shared(p, q) > shared(p, best)))
                    best = q;
            paired[p] = true;
            if (best == m_n) {
                m_out[p].role = "container";
                m_out[p].evidence =
                    "traffic: shares frames with the bridge " + m_names[bridge] + " only, farther from the uplink";
                continue;
            }
            paired[best] = true;
            pair_container_and_veth(p, best, bridge);
        }
    }

    void pair_container_and_veth(std::size_t p, std::size_t q, std::size_t bridge) {
        bool p_farther = m_distance[p] > m_distance[q] || (m_distance[p] == m_distance[q] && p < q);
        if (role_from_name(m_names[p]) == "veth") p_farther = false;
        if (role_from_name(m_names[q]) == "veth") p_farther = true;
        const std::size_t container = p_farther ? p : q;
        const std::size_t veth = p_farther ? q : p;
        m_out[container].role = "container";
        m_out[container].evidence = "traffic: sees the same frames as " + m_names[veth] + ", farther from the uplink";
        m_out[veth].role = "veth";
        m_out[veth].evidence =
            "traffic: sees the same frames as " + m_names[container] + ", nearer the bridge " + m_names[bridge];
    }

    std::size_t m_n;
    std::span<const std::string> m_names;
    Pairs m_pairs;
    std::vector<Routed> m_routed;
    UnionFind m_segments;
    std::vector<std::size_t> m_segment_size;
    std::vector<bool> m_uplink;
    std::vector<std::int64_t> m_distance;  // mean time to the uplink
    std::vector<RoleGuess>& m_out;
};

}  // namespace

std::vector<RoleGuess> infer_roles(std::span<const Sighting> sightings, std::span<const std::uint32_t> points,
                                   std::span<const std::string> names) {
    const std::size_t n = points.size();
    std::unordered_map<std::uint32_t, std::size_t> slot;
    for (std::size_t i = 0; i < n; ++i) slot[points[i]] = i;
    Pairs pairs;
    std::vector<Routed> routed;
    observe_pairs(sightings, slot, pairs, routed);

    std::vector<RoleGuess> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        out[i].point = points[i];
        out[i].role = "other";
    }
    RoleInference(n, names, std::move(pairs), std::move(routed), out).run();
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
