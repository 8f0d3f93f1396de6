#include "correlate/losses.hpp"

#include "tracer/packet.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace hoptrace::correlate {
namespace {

bool inside_network(const IpAddr& a, const std::vector<std::pair<IpAddr, int>>& networks) {
    for (const auto& [net, prefix] : networks) {
        if (net.family != a.family) continue;
        int bits = prefix;
        bool same = true;
        for (std::size_t i = 0; i < net.bytes.size() && bits > 0 && same; ++i, bits -= 8) {
            const auto mask = static_cast<std::uint8_t>(bits >= 8 ? 0xff : 0xff << (8 - bits));
            same = (net.bytes[i] & mask) == (a.bytes[i] & mask);
        }
        if (same) return true;
    }
    return false;
}

bool skipped(const JourneyInfo& info) {
    return info.relation == Relation::copy_of || info.relation == Relation::reassembly_of;
}

using Window = std::pair<std::int64_t, std::int64_t>;  // first and last timestamp
using FlowPoint = std::pair<std::uint32_t, std::uint32_t>;

// Losses: wherever the path says a packet should appear next and it does not — unless the capture at that point
// was not running then (a live capture knows its window; for files, the point's first and last packet, or a later
// packet of the same flow there, prove it was capturing).
//
// The path of (flow, direction) is the point sequence of its longest journey, continued by the topology where no
// journey shows the way: a packet going out to an address that is not inside (a container's, or in a bridge's
// network) that stops on the bridge was going to the uplink (when there is exactly one), and a reply follows the
// forward path back. An ICMP error is expected to retrace its probe's path back to the sender.
class LossFinder {
public:
    LossFinder(std::span<const Sighting> sightings, const Journeys& journeys, const MatchOptions& options,
               Analysis& out)
        : m_sightings(sightings), m_journeys(journeys), m_options(options), m_out(out) {}

    void run() {
        survey_windows();
        survey_journeys();
        survey_endings();
        packets_lost();
        icmp_errors_lost();
    }

private:
    // Each point's capture window: the live capture's (when known), widened by its own packets; a point that saw
    // nothing at all captured while the others did (nothing says otherwise).
    void survey_windows() {
        m_window = m_options.point_windows;
        for (const Sighting& s : m_sightings) {
            auto [it, fresh] = m_window.try_emplace(s.point, s.ts_ns, s.ts_ns);
            if (!fresh) it->second = {std::min(it->second.first, s.ts_ns), std::max(it->second.second, s.ts_ns)};
        }
        for (const auto& [point, w] : m_window)
            m_all = {std::min(m_all.first, w.first), std::max(m_all.second, w.second)};
        for (const auto& [point, rank] : m_options.role_rank) {
            m_window.try_emplace(point, m_all);
            if (rank >= 0 && rank <= 3) m_by_rank[rank].push_back(point);
        }
    }

    [[nodiscard]] int rank_of(std::uint32_t point) const {
        const auto it = m_options.role_rank.find(point);
        return it == m_options.role_rank.end() ? -1 : it->second;
    }

    [[nodiscard]] bool is_fragment(std::size_t j) const {
        return (m_sightings[m_journeys.of(j).front()].flags & packet_flag::k_fragment) != 0;
    }

    // Per flow and point, its latest sighting there (proof the point was capturing then) and whether fragments or
    // reassembled datagrams passed; per flow and direction, the longest journey; the addresses inside the host.
    void survey_journeys() {
        std::set<IpAddr> inside;  // where journeys began inside the host: containers' (and the bridge's) addresses
        for (std::size_t j = 0; j < m_journeys.count(); ++j) {
            const JourneyInfo& info = m_out.journeys[j];
            const auto members = m_journeys.of(j);
            for (const std::uint32_t m : members) {
                auto& t = m_flow_seen[{info.flow, m_sightings[m].point}];
                t = std::max(t, m_sightings[m].ts_ns);
            }
            const Sighting& head = m_sightings[members.front()];
            if (const int r = rank_of(head.point); r >= 0 && r <= 2) inside.insert(head.tuple.src);
            if (info.relation == Relation::reassembly_of) {
                for (const std::uint32_t m : members) m_reassembled_at.insert({info.flow, m_sightings[m].point});
                m_reassembly.try_emplace(info.related, static_cast<std::uint32_t>(j));
                m_reassembled_on[{info.flow, info.direction}].try_emplace(m_sightings[members.front()].point,
                                                                          static_cast<std::uint32_t>(j));
            }
            if (is_fragment(j)) {
                for (const std::uint32_t m : members) m_fragment_seen_at.insert({info.flow, m_sightings[m].point});
                if (info.relation == Relation::fragment_of)
                    m_later_fragments[info.related].push_back(static_cast<std::uint32_t>(j));
            }
            if (info.icmp_error || skipped(info)) continue;
            auto [it, inserted] = m_longest.try_emplace({info.flow, info.direction}, j);
            if (!inserted && members.size() > m_journeys.of(it->second).size()) it->second = j;
        }
        m_inside = std::move(inside);
        // The networks behind the bridges: a live capture knows the bridges' addresses; for files, the /24 (IPv4)
        // or /64 (IPv6) around each address a journey began from inside the host stands in for them.
        m_networks = m_options.inside_networks;
        if (m_networks.empty())
            for (const IpAddr& a : m_inside) m_networks.emplace_back(a, a.family == 4 ? 24 : 64);
    }

    // What ended a journey early: an ICMP error that answered it (and which), or a continuation (GSO segments).
    void survey_endings() {
        for (std::uint32_t j = 0; j < m_journeys.count(); ++j) {
            const JourneyInfo& info = m_out.journeys[j];
            if (info.relation == Relation::segment_of) m_continued.insert(info.related);
            if (info.relation == Relation::answers && info.icmp_error)
                m_ended_by.try_emplace(
                    info.related,
                    is_time_exceeded(m_sightings[m_journeys.of(j).front()]) ? LossCause::expired : LossCause::rejected,
                    j);
        }
    }

    [[nodiscard]] std::vector<std::uint32_t> points_of(std::size_t j) const {
        std::vector<std::uint32_t> path;
        for (const std::uint32_t m : m_journeys.of(j)) path.push_back(m_sightings[m].point);
        return path;
    }

    const std::vector<std::uint32_t>& expected_path(std::uint32_t flow, FlowDirection direction) {
        const auto key = std::pair{flow, direction};
        if (auto it = m_paths.find(key); it != m_paths.end()) return it->second;
        std::vector<std::uint32_t> path = points_of(m_longest.at(key));
        if (const auto it = m_reassembled_on.find(key); it != m_reassembled_on.end())
            for (const auto& [point, reassembly] : it->second) place_reassembly(path, point, reassembly);
        const Tuple& original = m_out.flows[flow].original;
        if (direction == FlowDirection::forward) {
            // Outward to an outside address: on to the next role while exactly one point has it.
            const bool outside = !m_inside.contains(original.dst) && !inside_network(original.dst, m_networks);
            for (int r = rank_of(path.back()); outside && r >= 1 && r < 3 && m_by_rank[r + 1].size() == 1; ++r)
                path.push_back(m_by_rank[r + 1].front());
        } else if (const auto fwd = m_longest.find({flow, FlowDirection::forward}); fwd != m_longest.end()) {
            // A reply retraces the forward path: on from where it stopped along the forward path reversed.
            std::vector<std::uint32_t> back = points_of(fwd->second);
            std::reverse(back.begin(), back.end());
            const auto at = std::find(back.begin(), back.end(), path.back());
            if (at != back.end())
                for (auto it = at + 1; it != back.end(); ++it)
                    if (std::find(path.begin(), path.end(), *it) == path.end()) path.push_back(*it);
        }
        return m_paths.emplace(key, std::move(path)).first->second;
    }

    // Where a host reassembled the flow's fragments (br_netfilter at docker0), the whole datagram is seen at a point
    // that its fragments go round: that point is on the path too, where the reassembly came in time among the
    // points its first fragment passed.
    void place_reassembly(std::vector<std::uint32_t>& path, std::uint32_t point, std::uint32_t reassembly) const {
        if (std::find(path.begin(), path.end(), point) != path.end()) return;
        const std::int64_t at_ts = m_sightings[m_journeys.of(reassembly).front()].ts_ns;
        auto after = path.end();
        for (const std::uint32_t m : m_journeys.of(m_out.journeys[reassembly].related)) {
            if (m_sightings[m].ts_ns > at_ts) break;
            if (const auto it = std::find(path.begin(), path.end(), m_sightings[m].point); it != path.end()) after = it;
        }
        if (after != path.end()) path.insert(after + 1, point);
    }

    // The path of journey j's flow and direction; fragments go round a point that sees only their reassembled
    // datagram (br_netfilter at docker0): on their path, such a point is left out.
    std::vector<std::uint32_t> path_of(std::size_t j) {
        const JourneyInfo& info = m_out.journeys[j];
        std::vector<std::uint32_t> path = expected_path(info.flow, info.direction);
        if (is_fragment(j))
            std::erase_if(path, [&](std::uint32_t p) {
                return m_reassembled_at.contains({info.flow, p}) && !m_fragment_seen_at.contains({info.flow, p});
            });
        return path;
    }

    // Whether `expected` was capturing when the journey (first seen at `from`, last at `to`) would have got there:
    // 2 it was (the live capture's window, or its own packets, or a later packet of the flow there), 1 only the
    // other imported files were (their packets span the time: files imported together are taken to have been
    // captured together, and the report says so), 0 it was not.
    int was_capturing(std::uint32_t flow, std::uint32_t expected, std::int64_t from, std::int64_t to) {
        const bool live = m_options.capture_start_ns != 0;
        const auto [first_seen, last_seen] = m_window.try_emplace(expected, m_all).first->second;
        const std::int64_t first_ts = live ? std::min(first_seen, m_options.capture_start_ns) : first_seen;
        const std::int64_t last_ts = std::max(last_seen, m_options.capture_stop_ns);
        const auto later = m_flow_seen.find({flow, expected});  // the same flow seen there afterwards
        const bool ends_after =
            last_ts >= to + m_options.max_hop_gap_ns || (later != m_flow_seen.end() && later->second > to);
        if (first_ts <= from && ends_after) return 2;
        if (!live && m_all.first <= from && m_all.second >= to) return 1;
        return 0;
    }

    // Where journey j stopped short of `path`: its last point and the next one the path expects there.
    struct Stop {
        std::uint32_t journey = 0;  // whose last sighting it was
        std::uint32_t after = 0;
        std::uint32_t expected = 0;
    };
    [[nodiscard]] std::optional<Stop> stop_of(std::uint32_t j, const std::vector<std::uint32_t>& path) const {
        const std::uint32_t last = m_sightings[m_journeys.of(j).back()].point;
        const auto at = std::find(path.begin(), path.end(), last);
        if (at == path.end() || at + 1 == path.end()) return std::nullopt;
        return Stop{j, last, *(at + 1)};
    }

    // A fragmented datagram is one packet and is judged once (flows count datagrams, not fragments). When a host
    // reassembled it (a reassembly-of journey), it went on as the whole datagram: its fragments' journeys end
    // there by right, and it stopped where the reassembled datagram did, unless pieces of it (cut again) turn up
    // further along the path. Otherwise it stopped where the first of its fragments to stop short did.
    [[nodiscard]] std::optional<Stop> datagram_stop(std::uint32_t first) {
        const JourneyInfo& info = m_out.journeys[first];
        std::vector<std::uint32_t> pieces{first};
        if (const auto it = m_later_fragments.find(first); it != m_later_fragments.end())
            pieces.insert(pieces.end(), it->second.begin(), it->second.end());
        if (const auto r = m_reassembly.find(first); r != m_reassembly.end()) {
            const std::vector<std::uint32_t>& path = expected_path(info.flow, info.direction);
            const std::optional<Stop> stop = stop_of(r->second, path);
            if (!stop) return std::nullopt;
            const auto beyond = std::find(path.begin(), path.end(), stop->after) + 1;
            for (const std::uint32_t piece : pieces)
                for (const std::uint32_t m : m_journeys.of(piece))
                    if (std::find(beyond, path.end(), m_sightings[m].point) != path.end()) return std::nullopt;
            return stop;
        }
        // Nothing of it was seen reassembled: it is expected at each point of the path, the one that reassembles
        // others included.
        const std::vector<std::uint32_t>& path = expected_path(info.flow, info.direction);
        std::optional<Stop> earliest;
        auto rank = [&](const Stop& s) { return std::find(path.begin(), path.end(), s.after) - path.begin(); };
        for (const std::uint32_t piece : pieces)
            if (const std::optional<Stop> stop = stop_of(piece, path);
                stop && (!earliest || rank(*stop) < rank(*earliest)))
                earliest = stop;
        return earliest;
    }

    [[nodiscard]] bool first_fragment(std::uint32_t j) const {
        return is_fragment(j) && m_sightings[m_journeys.of(j).front()].frag_offset == 0;
    }

    // The flows' own packets, counted per (flow, direction, last point, expected point, cause).
    void packets_lost() {
        using LossKey = std::tuple<std::uint32_t, FlowDirection, std::uint32_t, std::uint32_t, LossCause>;
        struct Lost {
            std::uint64_t count = 0;
            std::uint64_t outside_window = 0;
            std::optional<std::uint32_t> evidence;
        };
        std::map<LossKey, Lost> lost;
        std::vector<std::pair<std::uint32_t, LossKey>> lost_journeys;
        for (std::uint32_t j = 0; j < m_journeys.count(); ++j) {
            const JourneyInfo& info = m_out.journeys[j];
            // Later fragments and reassemblies are judged with their datagram (its first fragment's journey).
            if (info.icmp_error || skipped(info) || info.relation == Relation::fragment_of || m_continued.contains(j))
                continue;
            const std::optional<Stop> stop = first_fragment(j) ? datagram_stop(j) : stop_of(j, path_of(j));
            if (!stop) continue;
            const std::int64_t last_ts = m_sightings[m_journeys.of(stop->journey).back()].ts_ns;
            const int capturing =
                was_capturing(info.flow, stop->expected, m_sightings[m_journeys.of(j).front()].ts_ns, last_ts);
            if (capturing == 0) continue;
            auto cause = m_ended_by.find(j);
            if (cause == m_ended_by.end()) cause = m_ended_by.find(stop->journey);
            const LossKey key{info.flow, info.direction, stop->after, stop->expected,
                              cause == m_ended_by.end() ? LossCause::dropped : cause->second.first};
            Lost& entry = lost[key];
            lost_journeys.emplace_back(j, key);
            ++entry.count;
            if (capturing == 1) ++entry.outside_window;
            if (cause != m_ended_by.end() && !entry.evidence) entry.evidence = cause->second.second;
        }
        std::map<LossKey, std::uint32_t> index;
        for (const auto& [key, value] : lost) {
            const auto& [flow, dir, after, expected, cause] = key;
            index.emplace(key, static_cast<std::uint32_t>(m_out.losses.size()));
            m_out.losses.push_back(Loss{flow, dir, after, expected, value.count, cause, std::nullopt, value.evidence,
                                        value.outside_window});
        }
        for (const auto& [j, key] : lost_journeys) m_out.journeys[j].loss = index.at(key);
    }

    // ICMP errors on their way back: they retrace the probe's path to its sender.
    void icmp_errors_lost() {
        for (std::uint32_t j = 0; j < m_journeys.count(); ++j) {
            const JourneyInfo& info = m_out.journeys[j];
            if (!info.icmp_error || info.relation != Relation::answers) continue;
            std::vector<std::uint32_t> back = points_of(info.related);
            std::reverse(back.begin(), back.end());
            const auto members = m_journeys.of(j);
            const Sighting& first = m_sightings[members.front()];
            const Sighting& last = m_sightings[members.back()];
            const auto start = std::find(back.begin(), back.end(), first.point);
            const auto at = std::find(back.begin(), back.end(), last.point);
            if (start == back.end() || at == back.end() || at < start || at + 1 == back.end()) continue;
            const std::uint32_t expected = *(at + 1);
            const int capturing = was_capturing(info.flow, expected, first.ts_ns, last.ts_ns);
            if (capturing == 0) continue;
            m_out.journeys[j].loss = static_cast<std::uint32_t>(m_out.losses.size());
            m_out.losses.push_back(Loss{info.flow, info.direction, last.point, expected, 1, LossCause::dropped, j,
                                        std::nullopt, capturing == 1 ? 1U : 0U});
        }
    }

    std::span<const Sighting> m_sightings;
    const Journeys& m_journeys;
    const MatchOptions& m_options;
    Analysis& m_out;

    std::unordered_map<std::uint32_t, Window> m_window;  // point -> (first, last)
    Window m_all{std::numeric_limits<std::int64_t>::max(), 0};
    std::vector<std::uint32_t> m_by_rank[4];
    std::map<FlowPoint, std::int64_t> m_flow_seen;  // (flow, point) -> last ts
    std::map<std::pair<std::uint32_t, FlowDirection>, std::size_t> m_longest;
    std::set<FlowPoint> m_reassembled_at;                           // (flow, point) saw a reassembled datagram
    std::set<FlowPoint> m_fragment_seen_at;                         // (flow, point) saw a fragment
    std::unordered_map<std::uint32_t, std::uint32_t> m_reassembly;  // first fragment's journey -> its reassembly
    // (flow, direction) -> the points that saw its datagrams reassembled, each with one such reassembly's journey
    std::map<std::pair<std::uint32_t, FlowDirection>, std::map<std::uint32_t, std::uint32_t>> m_reassembled_on;
    std::unordered_map<std::uint32_t, std::vector<std::uint32_t>> m_later_fragments;  // first fragment -> the rest
    std::set<IpAddr> m_inside;
    std::vector<std::pair<IpAddr, int>> m_networks;
    std::map<std::pair<std::uint32_t, FlowDirection>, std::vector<std::uint32_t>> m_paths;
    std::unordered_map<std::uint32_t, std::pair<LossCause, std::uint32_t>> m_ended_by;
    std::unordered_set<std::uint32_t> m_continued;
};

}  // namespace

void find_losses(std::span<const Sighting> sightings, const Journeys& journeys, const MatchOptions& options,
                 Analysis& out) {
    LossFinder(sightings, journeys, options, out).run();
}

}  // namespace hoptrace::correlate
