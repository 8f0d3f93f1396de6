#include "correlate/analysis.hpp"

#include "correlate/losses.hpp"

#include "tracer/packet.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace hoptrace::correlate {
namespace {

FlowDirection flip(FlowDirection d) noexcept {
    return d == FlowDirection::forward ? FlowDirection::reply : FlowDirection::forward;
}

bool is_icmp_error(const Sighting& s) noexcept { return (s.flags & packet_flag::k_icmp_error) != 0; }

// Role ranks (MatchOptions::role_rank) that bridge-local traffic is recognised by.
constexpr int k_rank_veth = 1;
constexpr int k_rank_bridge = 2;

bool has_rank(const MatchOptions& options, std::uint32_t point, int rank) {
    const auto it = options.role_rank.find(point);
    return it != options.role_rank.end() && it->second == rank;
}

// A frame that a bridge switched from one of its ports to another (container to container on one bridge)
// crosses both ports' veths with the same TTL; a routed one (from one bridge to another, or NATed back out by
// the bridge it came in by) loses one on the way. Returns the index in `members` (time order) of the second
// veth sighting, the egress port, when the first two veth sightings carry the same TTL; 0 when the journey
// was not switched between two ports.
std::size_t egress_port(std::span<const Sighting> sightings, std::span<const std::uint32_t> members,
                        const MatchOptions& options) {
    const Sighting* ingress = nullptr;
    for (std::size_t i = 0; i < members.size(); ++i) {
        const Sighting& s = sightings[members[i]];
        if (!has_rank(options, s.point, k_rank_veth)) continue;
        if (ingress == nullptr) {
            ingress = &s;
            continue;
        }
        return s.ttl == ingress->ttl ? i : 0;
    }
    return 0;
}

// Moves the bridge sightings of the journeys `which` (ascending indexes) out of `journeys` into `observers`,
// which stays parallel to `journeys`.
void detach_bridges(std::span<const Sighting> sightings, const std::vector<std::size_t>& which, Journeys& journeys,
                    Journeys& observers, const MatchOptions& options) {
    if (which.empty()) return;
    Journeys path;
    Journeys observed;
    path.offsets.reserve(journeys.offsets.size());
    path.members.reserve(journeys.members.size());
    path.offsets.push_back(0);
    observed.offsets.reserve(journeys.offsets.size());
    observed.offsets.push_back(0);
    auto next = which.begin();
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const bool detach = next != which.end() && *next == j;
        if (detach) ++next;
        if (j < observers.count()) {
            const auto kept = observers.of(j);
            observed.members.insert(observed.members.end(), kept.begin(), kept.end());
        }
        for (const std::uint32_t m : journeys.of(j)) {
            if (detach && has_rank(options, sightings[m].point, k_rank_bridge)) observed.members.push_back(m);
            else path.members.push_back(m);
        }
        path.offsets.push_back(static_cast<std::uint32_t>(path.members.size()));
        observed.offsets.push_back(static_cast<std::uint32_t>(observed.members.size()));
    }
    path.ambiguous = std::move(journeys.ambiguous);
    journeys = std::move(path);
    observers = std::move(observed);
}

// The bridge's own tap sees a switched frame only as the copy the bridge passes up to its own interface
// (libpcap makes it promiscuous): stamped with the ingress port's time, or after the egress port already sent
// it (a TCP segment keeps its socket's delivery time, so every tap stamps it afresh). Either way it is no hop
// between the ports. The bridge sightings of switched journeys become observers: moved out of `journeys`
// into the result, which is parallel to `journeys`.
Journeys detach_observers(std::span<const Sighting> sightings, Journeys& journeys, const MatchOptions& options) {
    Journeys observers;
    observers.offsets.assign(journeys.count() + 1, 0);
    std::vector<std::size_t> switched;
    for (std::size_t j = 0; j < journeys.count(); ++j)
        if (egress_port(sightings, journeys.of(j), options) != 0) switched.push_back(j);
    detach_bridges(sightings, switched, journeys, observers, options);
    return observers;
}

// A flow whose packets the bridge switched between two containers is bridge-local: the bridge is no hop of
// any of its journeys, also of one that never reached the egress port (the bridge saw it and did not forward
// it). Such a journey then ends at the ingress veth, and is lost there when the flow's path goes on. Returns
// whether any sighting was detached.
bool detach_flow_observers(std::span<const Sighting> sightings, Journeys& journeys, Analysis& out,
                           const MatchOptions& options) {
    std::unordered_set<std::uint32_t> bridge_local;
    for (std::size_t j = 0; j < out.observers.count(); ++j)
        if (!out.observers.of(j).empty()) bridge_local.insert(out.journeys[j].flow);
    std::vector<std::size_t> which;
    for (std::size_t j = 0; j < journeys.count() && !bridge_local.empty(); ++j) {
        if (!bridge_local.contains(out.journeys[j].flow) || !out.observers.of(j).empty()) continue;
        const auto members = journeys.of(j);
        const auto bridges = std::count_if(members.begin(), members.end(), [&](std::uint32_t m) {
            return has_rank(options, sightings[m].point, k_rank_bridge);
        });
        if (bridges > 0 && static_cast<std::size_t>(bridges) < members.size()) which.push_back(j);
    }
    detach_bridges(sightings, which, journeys, out.observers, options);
    return !which.empty();
}

std::span<const std::uint32_t> observers_of(const Analysis& a, std::size_t j) {
    return j < a.observers.count() ? a.observers.of(j) : std::span<const std::uint32_t>{};
}

// Observer sightings are sightings of their journey's flow too.
void count_observers(std::span<const Sighting> sightings, Analysis& out) {
    for (std::size_t j = 0; j < out.observers.count(); ++j) {
        for (const std::uint32_t o : out.observers.of(j)) {
            Flow& f = out.flows[out.journeys[j].flow];
            ++f.packets;
            f.first_ts_ns = std::min(f.first_ts_ns, sightings[o].ts_ns);
            f.last_ts_ns = std::max(f.last_ts_ns, sightings[o].ts_ns);
        }
    }
}

// Assigns every journey to a flow and a direction. A flow is found by any of its tuples: the original and
// translated tuple (forward) and their reverses (reply).
class FlowTable {
public:
    explicit FlowTable(Analysis& out) : m_out(out) {}

    void add(std::span<const Sighting> sightings, std::span<const std::uint32_t> members) {
        const Sighting& first = sightings[members.front()];
        const Sighting& last = sightings[members.back()];
        JourneyInfo info;
        if (is_icmp_error(first) && first.inner.proto != 0) {
            // Tied to the probe it quotes (quoted before or after the rewrite: both tuples are known).
            auto probe = find(first.inner, first.ts_ns);
            if (!probe) probe = find(last.inner, first.ts_ns);
            if (probe) {
                info = JourneyInfo{probe->first, flip(probe->second), true, Relation::none, 0, std::nullopt};
                count(info.flow, members.size(), first.ts_ns, last.ts_ns);
                m_out.journeys.push_back(info);
                return;
            }
        }
        const Tuple& a = first.tuple;
        const Tuple& b = last.tuple;
        auto found = find(a, first.ts_ns);
        if (!found) found = find(b, first.ts_ns);
        if (!found) {
            const auto id = static_cast<std::uint32_t>(m_out.flows.size());
            Flow flow;
            flow.original = a;
            flow.translated = b;
            flow.first_ts_ns = first.ts_ns;
            flow.last_ts_ns = last.ts_ns;
            m_out.flows.push_back(flow);
            enter(id);
            found = std::pair{id, FlowDirection::forward};
        } else {
            // A flow first seen at one point only learns its translation from a later journey.
            Flow& flow = m_out.flows[found->first];
            if (flow.original == flow.translated && a != b) {
                flow.translated = found->second == FlowDirection::forward ? b : a.reversed();
                if (flow.translated == flow.original) flow.translated = b;
                enter(found->first);
            }
        }
        info = JourneyInfo{found->first, found->second, is_icmp_error(first), Relation::none, 0, std::nullopt};
        count(info.flow, members.size(), first.ts_ns, last.ts_ns);
        m_out.journeys.push_back(info);
    }

private:
    // A flow idle for longer than this is over: NAT may hand the same translated tuple to a new connection
    // (another container's, even) once the kernel forgot the old one, and that is a new flow.
    static constexpr std::int64_t k_flow_idle_ns = 300'000'000'000;

    std::optional<std::pair<std::uint32_t, FlowDirection>> find(const Tuple& t, std::int64_t ts_ns) const {
        auto it = m_index.find(t);
        if (it == m_index.end()) return std::nullopt;
        if (ts_ns - m_out.flows[it->second.first].last_ts_ns > k_flow_idle_ns) return std::nullopt;
        return it->second;
    }
    // The newest flow owns its tuples (an idle one it replaces keeps its journeys).
    void enter(std::uint32_t id) {
        const Flow& f = m_out.flows[id];
        m_index.insert_or_assign(f.original.reversed(), std::pair{id, FlowDirection::reply});
        m_index.insert_or_assign(f.translated.reversed(), std::pair{id, FlowDirection::reply});
        m_index.insert_or_assign(f.translated, std::pair{id, FlowDirection::forward});
        m_index.insert_or_assign(f.original, std::pair{id, FlowDirection::forward});
    }
    void count(std::uint32_t id, std::size_t sightings, std::int64_t first_ts, std::int64_t last_ts) {
        Flow& f = m_out.flows[id];
        f.packets += sightings;
        f.journeys += 1;
        f.first_ts_ns = f.journeys == 1 ? first_ts : std::min(f.first_ts_ns, first_ts);
        f.last_ts_ns = std::max(f.last_ts_ns, last_ts);
    }

    Analysis& m_out;
    std::unordered_map<Tuple, std::pair<std::uint32_t, FlowDirection>, TupleHash> m_index;
};

void assign_flows(std::span<const Sighting> sightings, const Journeys& journeys, Analysis& out) {
    out.flows.clear();
    out.journeys.clear();
    out.journeys.reserve(journeys.count());
    FlowTable table(out);
    for (std::size_t j = 0; j < journeys.count(); ++j) table.add(sightings, journeys.of(j));
}

constexpr std::uint8_t k_proto_tcp = 6;
constexpr std::uint8_t k_tcp_fin = 0x01;
constexpr std::uint8_t k_tcp_syn = 0x02;
constexpr std::uint8_t k_tcp_rst = 0x04;
constexpr std::uint8_t k_tcp_ack = 0x10;

bool is_tcp(const Sighting& s) noexcept { return s.tuple.proto == k_proto_tcp; }
// A TCP segment that occupies sequence space: data, SYN or FIN. Sending it twice is a retransmission.
bool takes_sequence_space(const Sighting& s) noexcept {
    return s.payload_len > 0 || (s.tcp_flags & (k_tcp_syn | k_tcp_fin)) != 0;
}

// Ties journeys to the earlier ones they answer or repeat (JourneyInfo::relation), in time order. Everything
// used is what NAT leaves alone: IPv4 id, TCP and echo sequence numbers, the fingerprint. Journeys that already
// have a relation (segments of a super-packet) keep it, and a segment is the first journey with its sequence
// number unless its super-packet (which starts with the first segment's) was.
class Relations {
public:
    Relations(std::span<const Sighting> sightings, const Journeys& journeys, Analysis& out, const MatchOptions& options)
        : m_sightings(sightings),
          m_journeys(journeys),
          m_out(out),
          m_options(options),
          m_prev_ip_id(journeys.count(), k_no_journey),
          m_prev_seq(journeys.count(), k_no_journey) {}

    void run() {
        for (std::uint32_t j = 0; j < m_journeys.count(); ++j) {
            JourneyInfo& info = m_out.journeys[j];
            const Sighting& first = head(j);
            if (info.relation == Relation::none) link(j, Relation::copy_of, copy_of(j, first));
            if (info.relation == Relation::none) link_fragments(j, info, first);
            if (info.relation == Relation::none) {
                if (info.icmp_error) {
                    link(j, Relation::answers, probe_of(info, first));
                } else if (auto request = request_of(info, first)) {
                    link(j, Relation::answers, request);
                } else {
                    link(j, Relation::repeats, original_of(j, info, first));
                }
            } else if (info.relation == Relation::segment_of && info.related < j) {
                // A later retransmission of the segment's bytes repeats the segment, the packet that actually
                // went on, rather than the super-packet it was cut from. (A super-packet numbered after its
                // segment — equal timestamps — must not be taken for a retransmission of it.)
                sent_range(info, first, j, true);
            }
            if (!info.icmp_error) remember(j, info, first);
        }
    }

private:
    // At a point that merges interfaces (tcpdump -i any, cooked v1) one packet shows up once per interface it
    // crossed (its tuple rewritten by NAT between them): a later one with its fingerprint, within the hop gap, is a
    // copy of the first.
    // The first journey of a fingerprint (at any point) is the packet; a journey of a merged point with that
    // fingerprint within the hop gap is a copy of it.
    std::optional<std::uint32_t> copy_of(std::uint32_t j, const Sighting& s) {
        const auto [it, fresh] = m_copies.try_emplace(s.fingerprint, j);
        if (fresh) return std::nullopt;
        if (s.ts_ns - head(it->second).ts_ns > m_options.max_hop_gap_ns) {
            it->second = j;
            return std::nullopt;
        }
        if (!m_options.merged_points.contains(s.point)) return std::nullopt;
        return it->second;
    }
    // Fragments: the first one (offset 0, MF) is the datagram's journey; the later ones are fragments of it (the
    // same flow, direction and IP id, within the hop gap); a whole datagram with that id, larger than the first
    // fragment, that turns up within the hop gap is the host's reassembly of them.
    void link_fragments(std::uint32_t j, const JourneyInfo& info, const Sighting& s) {
        if (info.icmp_error) return;
        const FragmentKey k{key(info.flow, info.direction), s.ip_id};
        const bool fragment = (s.flags & packet_flag::k_fragment) != 0;
        if (fragment && s.frag_offset == 0) {
            m_first_fragment.insert_or_assign(k, j);
            return;
        }
        const auto it = m_first_fragment.find(k);
        if (it == m_first_fragment.end()) return;
        const Sighting& first = head(it->second);
        if (s.ts_ns - first.ts_ns > m_options.max_hop_gap_ns) return;
        if (fragment) link(j, Relation::fragment_of, it->second);
        else if (s.ip_len > first.ip_len) link(j, Relation::reassembly_of, it->second);
    }

    const Sighting& head(std::uint32_t j) const { return m_sightings[m_journeys.of(j).front()]; }
    static std::uint64_t key(std::uint32_t flow, FlowDirection d) noexcept {
        return (std::uint64_t{flow} << 1) | (d == FlowDirection::reply ? 1U : 0U);
    }
    void link(std::uint32_t j, Relation r, std::optional<std::uint32_t> other) {
        if (!other) return;
        m_out.journeys[j].relation = r;
        m_out.journeys[j].related = *other;
    }

    // What answers quote, indexed however far back it lies (journeys are numbered in time order, so the latest is
    // the highest number): per (flow, direction) its latest journey and its latest one without a TCP or echo
    // sequence number, and chains, newest first, of its journeys with one IPv4 id and of those with one sequence
    // number.
    struct ChainKey {
        std::uint64_t flow_direction;
        std::uint32_t value;
        bool operator==(const ChainKey&) const = default;
    };
    struct ChainKeyHash {
        std::size_t operator()(const ChainKey& k) const noexcept {
            return std::hash<std::uint64_t>{}(k.flow_direction * 0x9e3779b97f4a7c15ULL ^ k.value);
        }
    };
    using Chains = std::unordered_map<ChainKey, std::uint32_t, ChainKeyHash>;  // -> the chain's newest journey
    static constexpr std::uint32_t k_no_journey = std::numeric_limits<std::uint32_t>::max();

    static bool sequenced(const Sighting& s) noexcept { return is_tcp(s) || is_echo_request(s); }
    static void chain(Chains& heads, std::vector<std::uint32_t>& previous, ChainKey k, std::uint32_t j) {
        const auto [it, fresh] = heads.try_emplace(k, j);
        if (!fresh) {
            previous[j] = it->second;
            it->second = j;
        }
    }
    void remember(std::uint32_t j, const JourneyInfo& info, const Sighting& s) {
        const std::uint64_t fd = key(info.flow, info.direction);
        m_latest.insert_or_assign(fd, j);
        if (s.tuple.src.family == 4) chain(m_by_ip_id, m_prev_ip_id, {fd, s.ip_id}, j);
        if (sequenced(s)) chain(m_by_seq, m_prev_seq, {fd, s.seq}, j);
        else m_latest_unsequenced.insert_or_assign(fd, j);
    }
    // The newest journey of a chain that `pred` accepts.
    template <typename Pred>
    std::optional<std::uint32_t> newest(const Chains& heads, const std::vector<std::uint32_t>& previous, ChainKey k,
                                        Pred&& pred) const {
        const auto it = heads.find(k);
        for (std::uint32_t j = it == heads.end() ? k_no_journey : it->second; j != k_no_journey; j = previous[j])
            if (pred(head(j))) return j;
        return std::nullopt;
    }
    static std::optional<std::uint32_t> at(const std::unordered_map<std::uint64_t, std::uint32_t>& latest,
                                           std::uint64_t fd) {
        const auto it = latest.find(fd);
        if (it == latest.end()) return std::nullopt;
        return it->second;
    }

    // An ICMP error quotes its probe's IPv4 id and TCP/echo sequence: the probe is the latest journey of the
    // flow that carried them. Without either (IPv6 UDP), the latest journey the other way is the probe.
    std::optional<std::uint32_t> probe_of(const JourneyInfo& info, const Sighting& error) const {
        const std::uint64_t fd = key(info.flow, flip(info.direction));
        auto seq_fits = [&](const Sighting& p) {
            return !error.has_inner_seq || !sequenced(p) || p.seq == error.inner_seq;
        };
        if (error.has_inner_ip_id) return newest(m_by_ip_id, m_prev_ip_id, {fd, error.inner_ip_id}, seq_fits);
        if (!error.has_inner_seq) return at(m_latest, fd);
        const auto with_seq = newest(m_by_seq, m_prev_seq, {fd, error.inner_seq}, seq_fits);
        const auto without = at(m_latest_unsequenced, fd);
        if (!with_seq || !without) return with_seq ? with_seq : without;
        return std::max(*with_seq, *without);
    }
    // An echo reply answers the request with its sequence number; a SYN-ACK or RST answers the SYN it acks.
    std::optional<std::uint32_t> request_of(const JourneyInfo& info, const Sighting& s) const {
        const std::uint64_t fd = key(info.flow, flip(info.direction));
        if (is_echo_reply(s)) return newest(m_by_seq, m_prev_seq, {fd, s.seq}, is_echo_request);
        const bool syn_ack = (s.tcp_flags & (k_tcp_syn | k_tcp_ack)) == (k_tcp_syn | k_tcp_ack);
        if (is_tcp(s) && (syn_ack || (s.tcp_flags & k_tcp_rst) != 0) && (s.tcp_flags & k_tcp_ack) != 0)
            return newest(m_by_seq, m_prev_seq, {fd, s.ack - 1}, [&](const Sighting& p) {
                return (p.tcp_flags & (k_tcp_syn | k_tcp_ack)) == k_tcp_syn && p.seq + 1 == s.ack;
            });
        return std::nullopt;
    }
    // A TCP segment whose first sequence number was already sent in its flow and direction repeats the journey
    // that sent it (a retransmission, however the sender cut the bytes again); any other packet repeats the
    // first one of its flow and direction with the same fingerprint (a duplicate).
    std::optional<std::uint32_t> original_of(std::uint32_t j, const JourneyInfo& info, const Sighting& s) {
        if (!is_tcp(s)) {
            const auto [it, fresh] =
                m_first.try_emplace(DuplicateKey{key(info.flow, info.direction), s.fingerprint}, j);
            if (fresh) return std::nullopt;
            return it->second;
        }
        if (!takes_sequence_space(s)) return std::nullopt;  // ACKs repeat by nature
        return sent_range(info, s, j, false);
    }

    // The journey that already sent the first sequence number of segment `s`, if any; otherwise (or with
    // `segment`: a piece of a super-packet, which is more specific than the range it lies in) `s` becomes the
    // sender of its range. Offsets count from the first sequence number seen in the flow and direction, so
    // wrap-around of the 32-bit space is harmless (a flow would have to send 4 GiB one way to come round).
    std::optional<std::uint32_t> sent_range(const JourneyInfo& info, const Sighting& s, std::uint32_t j, bool segment) {
        const std::uint32_t length =
            s.payload_len + ((s.tcp_flags & k_tcp_syn) != 0) + ((s.tcp_flags & k_tcp_fin) != 0);
        auto [found, fresh] = m_sent_bytes.try_emplace(key(info.flow, info.direction));
        SentBytes& sent = found->second;
        if (fresh) sent.base = s.seq;
        const std::uint32_t offset = s.seq - sent.base;
        if (segment) {
            sent.ranges.insert_or_assign(offset, std::pair{offset + length, j});
            return std::nullopt;
        }
        auto it = sent.ranges.upper_bound(offset);
        if (it != sent.ranges.begin()) {
            --it;
            if (offset < it->second.first) return it->second.second;
        }
        sent.ranges.emplace(offset, std::pair{offset + length, j});
        return std::nullopt;
    }

    struct SentBytes {
        std::uint32_t base = 0;
        std::map<std::uint32_t, std::pair<std::uint32_t, std::uint32_t>> ranges;  // start -> (end, journey)
    };
    struct DuplicateKey {
        std::uint64_t flow_direction;
        std::uint64_t fingerprint;
        bool operator==(const DuplicateKey&) const = default;
    };
    struct DuplicateKeyHash {
        std::size_t operator()(const DuplicateKey& k) const noexcept {
            return std::hash<std::uint64_t>{}(k.flow_direction * 0x9e3779b97f4a7c15ULL ^ k.fingerprint);
        }
    };

    struct FragmentKey {
        std::uint64_t flow_direction;
        std::uint16_t ip_id;
        bool operator==(const FragmentKey&) const = default;
    };
    struct FragmentKeyHash {
        std::size_t operator()(const FragmentKey& k) const noexcept {
            return std::hash<std::uint64_t>{}(k.flow_direction * 0x9e3779b97f4a7c15ULL ^ k.ip_id);
        }
    };

    std::span<const Sighting> m_sightings;
    const Journeys& m_journeys;
    Analysis& m_out;
    const MatchOptions& m_options;
    std::unordered_map<std::uint64_t, std::uint32_t> m_copies;  // fingerprint -> its first journey (recent)
    std::unordered_map<FragmentKey, std::uint32_t, FragmentKeyHash> m_first_fragment;
    std::unordered_map<std::uint64_t, std::uint32_t> m_latest;              // (flow, direction) -> newest journey
    std::unordered_map<std::uint64_t, std::uint32_t> m_latest_unsequenced;  // ... without a TCP/echo sequence
    Chains m_by_ip_id;                                                      // IPv4 journeys by (flow, direction, IP id)
    Chains m_by_seq;                          // TCP segments and echo requests by (flow, direction, sequence)
    std::vector<std::uint32_t> m_prev_ip_id;  // journey -> the next older one in its chain, or k_no_journey
    std::vector<std::uint32_t> m_prev_seq;
    std::unordered_map<DuplicateKey, std::uint32_t, DuplicateKeyHash> m_first;  // non-TCP: first of each fingerprint
    std::unordered_map<std::uint64_t, SentBytes> m_sent_bytes;                  // TCP: sequence ranges sent
};

// Path order from precedence votes: within a journey (turned round when it went inward, so that every vote is
// outward), a point seen strictly earlier than another precedes it. Equal timestamps
// give no vote — the matcher's order between them is arbitrary, and votes from it would only confirm that.
// A journey switched between two containers on one bridge is two container paths that meet at the bridge:
// up to its egress port it went outward, from there inward; each leg votes on its own, and every point of
// both legs precedes the bridge that observed it.
// Points are ordered by (votes received as follower − votes as leader) / votes; ties by their role on the
// path (container, veth, bridge, uplink, other), then id.
std::vector<std::uint32_t> path_order(std::span<const Sighting> sightings, const Journeys& journeys, const Analysis& a,
                                      const MatchOptions& options) {
    std::map<std::uint32_t, std::pair<std::int64_t, std::int64_t>> votes;  // point -> (led, followed)
    auto vote = [&](std::span<const std::uint32_t> members, bool inward) {
        for (std::size_t x = 0; x < members.size(); ++x) {
            votes.try_emplace(sightings[members[x]].point, 0, 0);
            for (std::size_t y = x + 1; y < members.size(); ++y) {
                const Sighting& p = sightings[members[x]];
                const Sighting& q = sightings[members[y]];
                if (p.ts_ns == q.ts_ns) continue;
                const Sighting& leader = (p.ts_ns < q.ts_ns) != inward ? p : q;
                const Sighting& follower = &leader == &p ? q : p;
                ++votes[leader.point].first;
                ++votes[follower.point].second;
            }
        }
    };
    auto rank_of_role = [&](std::uint32_t point) {
        const auto it = options.role_rank.find(point);
        return it == options.role_rank.end() ? 4 : it->second;
    };
    // Which way a journey went: by the roles of its ends when they are known (a published port's flow starts at
    // the uplink and goes inward), else a reply goes inward. Votes are cast outward, so that position 0 is the
    // innermost point whichever way the flows started.
    auto inward = [&](std::span<const std::uint32_t> members, FlowDirection direction) {
        const int first = rank_of_role(sightings[members.front()].point);
        const int last = rank_of_role(sightings[members.back()].point);
        if (first < 4 && last < 4 && first != last) return first > last;
        return direction == FlowDirection::reply;
    };
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        const auto observed = observers_of(a, j);
        const std::size_t egress = observed.empty() ? 0 : egress_port(sightings, members, options);
        if (egress == 0) {
            vote(members, inward(members, a.journeys[j].direction));
            continue;
        }
        vote(members.first(egress), false);
        vote(members.subspan(egress), true);
        for (const std::uint32_t o : observed) {
            for (const std::uint32_t m : members) {
                ++votes[sightings[m].point].first;
                ++votes[sightings[o].point].second;
            }
        }
    }
    std::vector<std::tuple<double, int, std::uint32_t>> order;
    for (const auto& [point, v] : votes) {
        const auto total = static_cast<double>(v.first + v.second);
        order.emplace_back(total > 0 ? static_cast<double>(v.second - v.first) / total : 0.0, rank_of_role(point),
                           point);
    }
    std::sort(order.begin(), order.end());
    std::vector<std::uint32_t> result;
    result.reserve(order.size());
    for (const auto& [score, role, point] : order) result.push_back(point);
    return result;
}

// Equal timestamps (microsecond files, sub-microsecond hops) are put in path order for the direction.
bool order_ties(std::span<const Sighting> sightings, Journeys& journeys, const Analysis& a,
                const std::vector<std::uint32_t>& order) {
    std::unordered_map<std::uint32_t, std::size_t> rank;
    for (std::size_t i = 0; i < order.size(); ++i) rank[order[i]] = i;
    bool changed = false;
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        auto* begin = journeys.members.data() + journeys.offsets[j];
        auto* end = journeys.members.data() + journeys.offsets[j + 1];
        const bool reply = a.journeys[j].direction == FlowDirection::reply;
        auto before = [&](std::uint32_t x, std::uint32_t y) {
            const Sighting& p = sightings[x];
            const Sighting& q = sightings[y];
            if (p.ts_ns != q.ts_ns) return p.ts_ns < q.ts_ns;
            return reply ? rank[p.point] > rank[q.point] : rank[p.point] < rank[q.point];
        };
        if (!std::is_sorted(begin, end, before)) {
            std::stable_sort(begin, end, before);
            changed = true;
        }
    }
    return changed;
}

// GSO/TSO: a TCP super-packet that point P saw whole (up to 64 KB, one journey) reaches the next point Q of its
// path as MTU-sized segments. Each segment differs from the super-packet in IP length (and, after the first, in
// sequence number and IP id: Linux gives segment i the super-packet's id + i), so the matcher makes it a journey
// of its own that begins at Q. It is tied to the super-packet (Relation::segment_of) when (flow, direction)
// agree, the super-packet's journey ended at the point just before Q on that direction's path, at most
// max_hop_gap_ns before the segment reached Q, and the segment's bytes lie strictly inside the super-packet's
// sequence range [seq, seq + payload) (mod 2^32). The IP id is not required: TSO hardware may keep it fixed,
// and IPv6 has none. Super-packets waiting for their segments are indexed by sequence number per (flow,
// direction) and forgotten after the hop gap, so the cost is O(n log n) in the journeys.
void find_segments(std::span<const Sighting> sightings, const Journeys& journeys, const MatchOptions& options,
                   Analysis& out) {
    auto key_of = [&](std::uint32_t j) {
        const JourneyInfo& info = out.journeys[j];
        return (std::uint64_t{info.flow} << 1) | (info.direction == FlowDirection::reply ? 1U : 0U);
    };
    auto head = [&](std::uint32_t j) -> const Sighting& { return sightings[journeys.of(j).front()]; };
    auto tail = [&](std::uint32_t j) -> const Sighting& { return sightings[journeys.of(j).back()]; };
    // The path of (flow, direction), as losses() takes it: the points of its longest journey, in travel order —
    // followed by the points where its other journeys began beyond that journey's end, in path order. (A capture that
    // starts in the middle of an upload may hold no packet that crossed the last hop whole, only segments.)
    std::unordered_map<std::uint64_t, std::uint32_t> longest;
    std::unordered_map<std::uint64_t, std::set<std::uint32_t>> reached;
    for (std::uint32_t j = 0; j < journeys.count(); ++j) {
        if (out.journeys[j].icmp_error) continue;
        auto [it, fresh] = longest.try_emplace(key_of(j), j);
        if (!fresh && journeys.of(j).size() > journeys.of(it->second).size()) it->second = j;
        reached[key_of(j)].insert(head(j).point);
    }
    std::unordered_map<std::uint32_t, std::size_t> rank;
    for (std::size_t i = 0; i < out.path_order.size(); ++i) rank[out.path_order[i]] = i;
    std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> paths;
    for (const auto& [key, j] : longest) {
        auto& path = paths[key];
        for (const std::uint32_t m : journeys.of(j)) path.push_back(sightings[m].point);
        const bool reply = (key & 1U) != 0;
        auto beyond = [&](std::uint32_t a, std::uint32_t b) { return reply ? rank[a] < rank[b] : rank[a] > rank[b]; };
        std::vector<std::uint32_t> extra;
        for (const std::uint32_t p : reached[key])
            if (std::find(path.begin(), path.end(), p) == path.end() && beyond(p, path.back())) extra.push_back(p);
        std::sort(extra.begin(), extra.end(), [&](std::uint32_t a, std::uint32_t b) { return beyond(b, a); });
        path.insert(path.end(), extra.begin(), extra.end());
    }
    constexpr std::size_t k_off_path = std::numeric_limits<std::size_t>::max();
    auto position = [](const std::vector<std::uint32_t>& path, std::uint32_t point) {
        const auto it = std::find(path.begin(), path.end(), point);
        return it == path.end() ? k_off_path : static_cast<std::size_t>(it - path.begin());
    };

    // TCP journeys that carry data, in the order they reached their first point; at equal times, the one that
    // began earlier on the path first (a super-packet before its segments, even in microsecond captures).
    struct Candidate {
        std::int64_t ts_ns;
        std::size_t position;
        std::uint32_t journey;
    };
    std::vector<Candidate> order;
    for (std::uint32_t j = 0; j < journeys.count(); ++j) {
        const Sighting& s = head(j);
        if (out.journeys[j].icmp_error || !is_tcp(s) || s.payload_len == 0) continue;
        order.push_back(Candidate{s.ts_ns, position(paths[key_of(j)], s.point), j});
    }
    std::sort(order.begin(), order.end(), [](const Candidate& a, const Candidate& b) {
        return std::tie(a.ts_ns, a.position, a.journey) < std::tie(b.ts_ns, b.position, b.journey);
    });

    // Per (flow, direction): journeys that ended before the end of the path, by first sequence number (the
    // latest one for a number), and in arrival order to forget them once the hop gap has passed.
    struct Waiting {
        std::map<std::uint32_t, std::uint32_t> by_seq;
        std::deque<std::uint32_t> arrival;
        std::uint32_t longest = 0;  // the most bytes one of them carried
    };
    std::unordered_map<std::uint64_t, Waiting> waiting;
    for (const Candidate& c : order) {
        const std::uint32_t j = c.journey;
        const std::uint64_t key = key_of(j);
        const std::vector<std::uint32_t>& path = paths[key];
        const Sighting& s = head(j);
        Waiting& w = waiting[key];
        while (!w.arrival.empty() && s.ts_ns - tail(w.arrival.front()).ts_ns > options.max_hop_gap_ns) {
            const std::uint32_t old = w.arrival.front();
            w.arrival.pop_front();
            if (const auto it = w.by_seq.find(head(old).seq); it != w.by_seq.end() && it->second == old)
                w.by_seq.erase(it);
        }
        if (c.position != k_off_path && c.position > 0 && !w.by_seq.empty()) {
            const std::uint32_t before = path[c.position - 1];
            std::optional<std::uint32_t> super;
            // Every journey below the segment's sequence number that could hold it (retransmissions overlap earlier
            // super-packets): downwards, until one starts too far below to reach it.
            auto it = w.by_seq.upper_bound(s.seq);
            for (std::size_t n = 0; n < w.by_seq.size(); ++n) {
                if (it == w.by_seq.begin()) it = w.by_seq.end();  // sequence numbers wrap
                --it;
                const Sighting& whole = head(it->second);
                const Sighting& at_p = tail(it->second);
                const std::uint32_t offset = s.seq - whole.seq;  // mod 2^32, growing along the walk
                if (offset >= w.longest) break;
                if (at_p.point != before || at_p.ts_ns > s.ts_ns || s.ts_ns - at_p.ts_ns > options.max_hop_gap_ns ||
                    s.payload_len >= whole.payload_len || offset >= whole.payload_len ||
                    std::uint64_t{offset} + s.payload_len > whole.payload_len)
                    continue;
                if (!super || at_p.ts_ns > tail(*super).ts_ns) super = it->second;
            }
            if (super) {
                out.journeys[j].relation = Relation::segment_of;
                out.journeys[j].related = *super;
                continue;
            }
        }
        const std::size_t end = position(path, tail(j).point);
        if (end != k_off_path && end + 1 < path.size()) {
            w.by_seq.insert_or_assign(s.seq, j);
            w.arrival.push_back(j);
            w.longest = std::max(w.longest, s.payload_len);
        }
    }
}

using HopKey = std::tuple<std::int64_t, FlowDirection, std::uint32_t, std::uint32_t>;  // flow (-1 all), dir, from, to

HopStats summarise(const HopKey& key, std::vector<std::int64_t>& samples) {
    std::sort(samples.begin(), samples.end());
    HopStats h;
    const auto [flow, dir, from, to] = key;
    if (flow >= 0) h.flow = static_cast<std::uint32_t>(flow);
    h.direction = dir;
    h.from_point = from;
    h.to_point = to;
    h.count = samples.size();
    h.min_ns = samples.front();
    h.p50_ns = percentile(samples, 50);
    h.p90_ns = percentile(samples, 90);
    h.p99_ns = percentile(samples, 99);
    h.max_ns = samples.back();
    return h;
}

void rewrites_and_hops(std::span<const Sighting> sightings, const Journeys& journeys, Analysis& out) {
    using RewriteKey =
        std::tuple<std::uint32_t, FlowDirection, unsigned, std::string, std::string, std::uint32_t, std::uint32_t>;
    std::map<RewriteKey, std::uint64_t> rewrites;
    std::map<HopKey, std::vector<std::int64_t>> samples;
    // A super-packet cut into segments crossed the hop between its last point and theirs once: one sample, up to
    // its first segment (the next ones only add the time to send the segments before them), and its rewrites.
    std::unordered_set<std::uint32_t> segmented;
    // The path of (flow, direction): its longest journey. A step that skips points of that path (fragments that
    // went round a bridge which saw their datagram reassembled) is no hop; its rewrite happened on the last hop.
    std::map<std::pair<std::uint32_t, FlowDirection>, std::size_t> longest;
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const JourneyInfo& info = out.journeys[j];
        if (info.icmp_error) continue;
        auto [it, fresh] = longest.try_emplace({info.flow, info.direction}, j);
        if (!fresh && journeys.of(j).size() > journeys.of(it->second).size()) it->second = j;
    }
    auto skipped_to = [&](const JourneyInfo& info, std::uint32_t a, std::uint32_t b) -> std::optional<std::uint32_t> {
        const auto path = journeys.of(longest.at({info.flow, info.direction}));
        std::size_t pa = path.size();
        std::size_t pb = path.size();
        for (std::size_t i = 0; i < path.size(); ++i) {
            if (sightings[path[i]].point == a) pa = i;
            if (sightings[path[i]].point == b) pb = i;
        }
        if (pa == path.size() || pb == path.size() || pb <= pa + 1) return std::nullopt;
        return sightings[path[pb - 1]].point;  // the point just before b
    };
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        const JourneyInfo& info = out.journeys[j];
        if (info.icmp_error) continue;  // reported with its probe, not mixed into the flow's own packets
        const bool first_segment = info.relation == Relation::segment_of && segmented.insert(info.related).second;
        for (std::size_t i = first_segment ? 0 : 1; i < members.size(); ++i) {
            const Sighting& a = sightings[i == 0 ? journeys.of(info.related).back() : members[i - 1]];
            const Sighting& b = sightings[members[i]];
            const std::int64_t dt = b.ts_ns - a.ts_ns;
            const std::optional<std::uint32_t> before_b = skipped_to(info, a.point, b.point);
            if (!before_b) {
                samples[HopKey{info.flow, info.direction, a.point, b.point}].push_back(dt);
                samples[HopKey{-1, info.direction, a.point, b.point}].push_back(dt);
            }
            const std::uint32_t from_point = before_b.value_or(a.point);
            const unsigned changed = changed_fields(a.tuple, b.tuple);
            for (unsigned bit : {field::k_src, field::k_dst, field::k_sport, field::k_dport}) {
                if ((changed & bit) == 0) continue;
                const bool addr = bit == field::k_src || bit == field::k_dst;
                auto value = [&](const Tuple& t) {
                    if (addr) return (bit == field::k_src ? t.src : t.dst).to_string();
                    return std::to_string(bit == field::k_sport ? t.sport : t.dport);
                };
                ++rewrites[RewriteKey{info.flow, info.direction, bit, value(a.tuple), value(b.tuple), from_point,
                                      b.point}];
            }
        }
    }
    for (auto& [key, n] : rewrites) {
        const auto& [flow, dir, bit, from, to, p, q] = key;
        out.rewrites.push_back(Rewrite{flow, dir, bit, from, to, p, q, n});
    }
    for (auto& [key, v] : samples) out.hops.push_back(summarise(key, v));
}

}  // namespace

const char* to_string(FlowDirection d) noexcept { return d == FlowDirection::forward ? "forward" : "reply"; }

const char* to_string(Relation r) noexcept {
    switch (r) {
        case Relation::answers:
            return "answers";
        case Relation::repeats:
            return "repeats";
        case Relation::segment_of:
            return "segment-of";
        case Relation::fragment_of:
            return "fragment-of";
        case Relation::reassembly_of:
            return "reassembly-of";
        case Relation::copy_of:
            return "copy-of";
        case Relation::none:
            break;
    }
    return "";
}

const char* to_string(LossCause c) noexcept {
    switch (c) {
        case LossCause::expired:
            return "expired";
        case LossCause::rejected:
            return "rejected";
        case LossCause::dropped:
            break;
    }
    return "dropped";
}

std::int64_t percentile(std::span<const std::int64_t> sorted, double p) noexcept {
    if (sorted.empty()) return 0;
    const auto n = static_cast<double>(sorted.size());
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * n));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

Analysis analyse(std::span<const Sighting> sightings, Journeys& journeys, const MatchOptions& options) {
    Analysis out;
    out.observers = detach_observers(sightings, journeys, options);
    assign_flows(sightings, journeys, out);
    if (detach_flow_observers(sightings, journeys, out, options)) assign_flows(sightings, journeys, out);
    out.path_order = path_order(sightings, journeys, out, options);
    if (order_ties(sightings, journeys, out, out.path_order)) {
        assign_flows(sightings, journeys, out);
        out.path_order = path_order(sightings, journeys, out, options);
    }
    count_observers(sightings, out);
    find_segments(sightings, journeys, options, out);
    Relations(sightings, journeys, out, options).run();
    rewrites_and_hops(sightings, journeys, out);
    find_losses(sightings, journeys, options, out);
    return out;
}

}  // namespace hoptrace::correlate
