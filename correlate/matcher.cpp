#include "correlate/matcher.hpp"

#include "tracer/packet.hpp"

#include <algorithm>
#include <array>
#include <deque>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

namespace hoptrace::correlate {
namespace {

constexpr std::uint32_t k_none = std::numeric_limits<std::uint32_t>::max();
constexpr int k_unknown_rank = -1;
constexpr int k_rank_container = 0;
constexpr int k_rank_veth = 1;
constexpr int k_rank_bridge = 2;
constexpr int k_rank_uplink = 3;

int rank_of(const MatchOptions& options, std::uint32_t point) {
    if (const auto it = options.role_rank.find(point); it != options.role_rank.end() && it->second <= k_rank_uplink)
        return it->second;
    return options.container_points.contains(point) ? k_rank_container : k_unknown_rank;
}

// Tuple translations: a tuple -> the tuples the same packet had one hop later (learned from unambiguous groups
// and from the kernel's conntrack entries), and the way back.
class Translations {
public:
    void add(const Tuple& from, const Tuple& to) {
        insert(m_forward[from], to);
        insert(m_forward[to.reversed()], from.reversed());  // the reply undoes the rewrite
    }
    // nullptr: nothing is known about `from`.
    [[nodiscard]] const std::vector<Tuple>* targets(const Tuple& from) const {
        const auto it = m_forward.find(from);
        return it == m_forward.end() ? nullptr : &it->second;
    }

private:
    static void insert(std::vector<Tuple>& list, const Tuple& t) {
        if (std::find(list.begin(), list.end(), t) == list.end()) list.push_back(t);
    }
    std::unordered_map<Tuple, std::vector<Tuple>, TupleHash> m_forward;
};

// What a step between two points' roles can be. A container's interface, its veth and the bridge see one L2
// frame (same tuple, same TTL); anything else with a known role on both ends is routed (TTL drops by one per
// router, NAT may rewrite it). Two containers' own interfaces seen directly (no veth captured) are switched or
// routed, never rewritten.
enum class Link : std::uint8_t { l2, routed, containers, unknown };

Link link_between(int a, int b) {
    if (a == k_unknown_rank || b == k_unknown_rank) return Link::unknown;
    if (a == k_rank_container && b == k_rank_container) return Link::containers;
    if (a > b) std::swap(a, b);
    if (b == k_rank_uplink) return Link::routed;
    if (a == k_rank_bridge && b == k_rank_bridge) return Link::routed;  // from one bridge to another
    return Link::l2;                                                    // container/veth/bridge among themselves
}

// The rank sequence of a journey (points of known role, in time order, equal (ts, TTL) free to permute) is a
// walk: outward (non-decreasing: container → veth → bridge → uplink), inward (non-increasing), or from one
// container to another (up to a veth, across the bridge — which may be anywhere in time, as its tap is an
// observer — and down again), never back in from the uplink.
struct RankMark {
    std::int64_t ts_ns;
    std::uint8_t ttl;
    std::int8_t rank;
};

bool walkable(std::vector<RankMark>& marks) {
    std::sort(marks.begin(), marks.end(), [](const RankMark& a, const RankMark& b) {
        if (a.ts_ns != b.ts_ns) return a.ts_ns < b.ts_ns;
        if (a.ttl != b.ttl) return a.ttl > b.ttl;
        return a.rank < b.rank;
    });
    auto same_block = [&](std::size_t i, std::size_t j) {
        return marks[i].ts_ns == marks[j].ts_ns && marks[i].ttl == marks[j].ttl;
    };
    // Monotonic in one direction, each block of equal (ts, TTL) sorted the way that helps.
    auto monotonic = [&](bool up) {
        int floor = up ? -1 : 99;
        std::size_t i = 0;
        while (i < marks.size()) {
            std::size_t j = i;
            // NOLINTNEXTLINE(bugprone-signed-char-misuse): a rank is a small signed number (-1: unknown), no character
            int lo = marks[i].rank;
            int hi = lo;
            while (j < marks.size() && same_block(i, j)) {
                lo = std::min<int>(lo, marks[j].rank);
                hi = std::max<int>(hi, marks[j].rank);
                ++j;
            }
            if (up ? lo < floor : hi > floor) return false;
            floor = up ? hi : lo;
            i = j;
        }
        return true;
    };
    if (monotonic(true) || monotonic(false)) return true;
    // Container to container: no uplink; without the bridges, the 0/1 ranks read 0* 1* 0*.
    std::size_t first_veth = k_none;
    std::size_t last_veth = 0;
    for (std::size_t i = 0; i < marks.size(); ++i) {
        if (marks[i].rank == k_rank_uplink) return false;
        if (marks[i].rank == k_rank_veth) {
            if (first_veth == k_none) first_veth = i;
            last_veth = i;
        }
    }
    if (first_veth == k_none) return false;
    for (std::size_t i = first_veth; i <= last_veth; ++i)
        if (marks[i].rank == k_rank_container && !same_block(i, first_veth) && !same_block(i, last_veth)) return false;
    return true;
}

// How well sighting `x` continues a journey whose latest sighting is `last` (larger is better; 0: it cannot).
// Levels: 4 the learned translation, 3 the same tuple, 2 one NAT step that kept the ports (masquerade keeps a
// port when it is free), 1 one NAT step that rewrote a port or the echo id. Times two, plus one when the step
// skips no role (a packet at the bridge continues the journey last seen at the veth before one last seen in the
// container). A rewrite needs a routed step (the TTL drops); an L2 step keeps the tuple and the TTL.
int step_score(const Sighting& last, const Sighting& x, int last_rank, int x_rank, const Translations& translations) {
    if (x.uncertain || last.uncertain) {
        // A fragment whose datagram could not be told: its ports are a guess, so only the addresses count.
        Sighting a = last;
        Sighting b = x;
        a.tuple.sport = a.tuple.dport = b.tuple.sport = b.tuple.dport = 0;
        a.uncertain = b.uncertain = false;
        return step_score(a, b, last_rank, x_rank, Translations{});
    }
    const Link link = link_between(last_rank, x_rank);
    const bool later = x.ts_ns > last.ts_ns;
    // Equal timestamps say nothing about which came first: the TTL may then run either way.
    const bool ttl_dropped = later ? x.ttl < last.ttl : x.ttl != last.ttl;
    const bool ttl_kept = x.ttl == last.ttl;
    if (later && x.ttl > last.ttl) return 0;
    const bool adjacent = last_rank == k_unknown_rank || x_rank == k_unknown_rank || std::abs(last_rank - x_rank) <= 1;
    int level = 0;
    if (x.tuple == last.tuple) {
        if (link == Link::l2 && !ttl_kept) return 0;
        if (link == Link::routed && !ttl_dropped) return 0;
        level = 3;
    } else {
        if (link == Link::l2 || link == Link::containers || !ttl_dropped) return 0;
        if (const auto* targets = translations.targets(last.tuple)) {
            if (std::find(targets->begin(), targets->end(), x.tuple) == targets->end()) return 0;
            level = 4;
        } else if (!one_nat_step(last.tuple, x.tuple)) {
            return 0;
        } else {
            const unsigned changed = changed_fields(last.tuple, x.tuple);
            level = (changed & (field::k_sport | field::k_dport)) == 0 ? 2 : 1;
        }
    }
    return level * 2 + (adjacent ? 1 : 0);
}

// One journey being built inside a fingerprint group.
struct OpenJourney {
    std::uint32_t id = 0;    // journey number (creation order)
    std::uint32_t last = 0;  // sighting index of its latest sighting (by time, then TTL)
    std::uint8_t min_ttl = 255;
    std::vector<std::uint32_t> points;  // points already in the journey (a handful)
    std::vector<RankMark> marks;        // its sightings at points of known role
};

// Open journeys of one fingerprint group, found by what their latest sighting carries: the tuple, and each half
// of it (for a candidate one NAT step away: masquerade/SNAT keeps the destination side, DNAT the source side).
// Entries go stale when a journey grows (its latest tuple changes) or ages past the hop gap, and are dropped when
// a lookup passes them; so each journey is looked at a bounded number of times per sighting that could join it,
// and the work grows with the candidates that are real, never with a fixed cap.
class OpenIndex {
public:
    struct Entry {
        std::uint32_t open;     // index into the group's open journeys
        std::uint32_t version;  // the journey's version when it was filed
    };

    // Groups are mostly a handful of sightings; after a flood's group grew a map's bucket array, clear() would
    // sweep it for every later group: such a map is replaced instead.
    void clear() {
        reset(m_exact);
        reset(m_source_kept);
        reset(m_destination_kept);
        reset(m_address_only);
        m_points.clear();
        m_point_ttls.clear();
    }
    template <typename Map>
    static void reset(Map& map) {
        constexpr std::size_t k_small = 64;
        if (map.bucket_count() > k_small) map = Map{};
        else map.clear();
    }
    void file(const Tuple& t, std::uint32_t point, std::uint8_t ttl, std::uint32_t open, std::uint32_t version) {
        m_exact[PointTuple{t, point}].push_back({open, version});
        m_destination_kept[PointTuple{destination_key(t), point | (std::uint32_t{ttl} << 24)}].push_back(
            {open, version});
        m_source_kept[PointTuple{source_key(t), point | (std::uint32_t{ttl} << 24)}].push_back({open, version});
        const std::pair<std::uint32_t, std::uint8_t> at{point, ttl};
        if (std::find(m_point_ttls.begin(), m_point_ttls.end(), at) == m_point_ttls.end()) m_point_ttls.push_back(at);
        m_address_only[address_key(t, true)].push_back({open, version});
        m_address_only[address_key(t, false)].push_back({open, version});
        if (std::find(m_points.begin(), m_points.end(), point) == m_points.end()) m_points.push_back(point);
    }
    // Calls fn(entries, queue) for each list that can hold a journey `x` may continue, most specific first. A queue
    // holds journeys of one origin (last seen at one point with one tuple) in the order they got there: its first
    // fit is the one. The lists of journeys one port rewrite away (every journey to one destination, in a flood)
    // are looked at only while `wider()` says a candidate there could still be as good as the best so far.
    // `rewrite_from(point, ttl)` says whether a journey last seen there with that TTL can be one rewrite away.
    template <typename Fn, typename Wider, typename RewriteFrom>
    void candidates(const Tuple& x, const std::vector<Tuple>* sources, Fn&& fn, Wider&& wider,
                    RewriteFrom&& rewrite_from) {
        for (const std::uint32_t point : m_points) {
            if (auto it = m_exact.find(PointTuple{x, point}); it != m_exact.end()) fn(it->second, true);
            if (sources != nullptr)
                for (const Tuple& s : *sources)
                    if (auto it = m_exact.find(PointTuple{s, point}); it != m_exact.end() && s != x)
                        fn(it->second, true);
        }
        for (const bool source_side : {true, false})
            if (auto it = m_address_only.find(address_key(x, source_side)); it != m_address_only.end())
                fn(it->second, false);
        if (!wider()) return;
        // Kept by (last point, last TTL): a flood's journeys wait at points and TTLs a rewrite cannot come from.
        for (const auto& [point, ttl] : m_point_ttls) {
            if (!rewrite_from(point, ttl)) continue;
            const std::uint32_t at = point | (std::uint32_t{ttl} << 24);
            if (auto it = m_destination_kept.find(PointTuple{destination_key(x), at}); it != m_destination_kept.end())
                fn(it->second, false);
            if (auto it = m_source_kept.find(PointTuple{source_key(x), at}); it != m_source_kept.end())
                fn(it->second, false);
        }
    }

private:
    struct PointTuple {
        Tuple tuple;
        std::uint32_t point;
        bool operator==(const PointTuple&) const = default;
    };
    struct PointTupleHash {
        std::size_t operator()(const PointTuple& k) const noexcept {
            return TupleHash{}(k.tuple) ^ (std::size_t{k.point} * 0x9e3779b97f4a7c15ULL);
        }
    };
    // A tuple with one side blanked: the side NAT must have left alone for a one-step rewrite.
    static Tuple destination_key(const Tuple& t) {
        Tuple k = t;
        k.src = {};
        k.sport = 0;
        return k;
    }
    // The tuple with one address blanked: journeys one address rewrite away (masquerade keeping the port).
    static Tuple address_key(const Tuple& t, bool source_side) {
        Tuple k = t;
        (source_side ? k.src : k.dst) = {};
        k.proto = static_cast<std::uint8_t>(k.proto ^ (source_side ? 0x40U : 0x20U));
        return k;
    }
    static Tuple source_key(const Tuple& t) {
        Tuple k = t;
        k.dst = {};
        k.dport = 0;
        k.proto = static_cast<std::uint8_t>(k.proto ^ 0x80U);  // keep the two key spaces apart in one hash
        return k;
    }
    std::unordered_map<PointTuple, std::vector<Entry>, PointTupleHash> m_exact;
    std::vector<std::uint32_t> m_points;  // points with filed journeys (a handful)
    std::unordered_map<PointTuple, std::vector<Entry>, PointTupleHash> m_destination_kept;  // point | ttl << 24
    std::unordered_map<PointTuple, std::vector<Entry>, PointTupleHash> m_source_kept;
    std::unordered_map<Tuple, std::vector<Entry>, TupleHash> m_address_only;
    std::vector<std::pair<std::uint32_t, std::uint8_t>> m_point_ttls;  // (point, TTL) of filed journeys
};

// [begin, end) ranges of `order` that share a fingerprint.
template <typename Fn>
void for_each_group(std::span<const Sighting> sightings, const std::vector<std::uint32_t>& order, Fn&& fn) {
    std::size_t begin = 0;
    while (begin < order.size()) {
        std::size_t end = begin + 1;
        const std::uint64_t fp = sightings[order[begin]].fingerprint;
        while (end < order.size() && sightings[order[end]].fingerprint == fp) ++end;
        fn(begin, end);
        begin = end;
    }
}

// A group is unambiguous when every sighting is at a different point, consecutive sightings are close in time,
// each step is possible without a learned translation, and the whole is a walk: then it is one journey, and its
// rewrites can be trusted.
bool unambiguous(std::span<const Sighting> sightings, std::span<const std::uint32_t> group,
                 const MatchOptions& options) {
    constexpr std::size_t k_max_points_on_a_path = 32;
    if (group.size() < 2 || group.size() > k_max_points_on_a_path) return false;
    std::array<std::uint32_t, k_max_points_on_a_path> points{};
    for (std::size_t i = 0; i < group.size(); ++i) points[i] = sightings[group[i]].point;
    const auto end = points.begin() + static_cast<std::ptrdiff_t>(group.size());
    std::sort(points.begin(), end);
    if (std::adjacent_find(points.begin(), end) != end) return false;
    const Translations none;
    std::vector<RankMark> marks;
    std::uint8_t min_ttl = 255;
    for (std::size_t i = 0; i < group.size(); ++i) {
        const Sighting& b = sightings[group[i]];
        const int rb = rank_of(options, b.point);
        if (rb != k_unknown_rank) marks.push_back({b.ts_ns, b.ttl, static_cast<std::int8_t>(rb)});
        if (i > 0) {
            const Sighting& a = sightings[group[i - 1]];
            if (b.ts_ns - a.ts_ns > options.max_hop_gap_ns) return false;
            if (b.ts_ns > a.ts_ns && b.ttl > min_ttl) return false;
            if (step_score(a, b, rank_of(options, a.point), rb, none) == 0) return false;
        }
        min_ttl = std::min(min_ttl, b.ttl);
    }
    return walkable(marks);
}

}  // namespace

Journeys match(std::span<const Sighting> sightings, const MatchOptions& options) {
    std::vector<std::uint32_t> order;
    order.reserve(sightings.size());
    for (std::uint32_t i = 0; i < sightings.size(); ++i)
        if (sightings[i].fingerprint != 0) order.push_back(i);
    // Time order; at equal timestamps the higher TTL first (it had crossed fewer routers), then the role order.
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        const Sighting& x = sightings[a];
        const Sighting& y = sightings[b];
        if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
        if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
        if (x.ttl != y.ttl) return x.ttl > y.ttl;
        const int rx = rank_of(options, x.point);
        const int ry = rank_of(options, y.point);
        if (rx != ry) return rx < ry;
        if (x.point != y.point) return x.point < y.point;
        return x.packet_id < y.packet_id;
    });

    // Phase 1: learn NAT translations from the kernel's own entries and from groups that can only be one journey.
    Translations translations;
    for (const auto& [from, to] : options.known_translations) translations.add(from, to);
    // The longest hop each pair of points showed in those groups: what a hop between them can take.
    std::unordered_map<std::uint64_t, std::int64_t> longest_hop;
    auto pair_key = [](std::uint32_t a, std::uint32_t b) { return (std::uint64_t{a} << 32) | b; };
    for_each_group(sightings, order, [&](std::size_t begin, std::size_t end) {
        const std::span<const std::uint32_t> group(order.data() + begin, end - begin);
        if (!unambiguous(sightings, group, options)) return;
        for (std::size_t i = 1; i < group.size(); ++i) {
            const Sighting& a = sightings[group[i - 1]];
            const Sighting& b = sightings[group[i]];
            auto& longest = longest_hop[pair_key(a.point, b.point)];
            longest = std::max(longest, b.ts_ns - a.ts_ns);
            if (a.tuple != b.tuple) translations.add(a.tuple, b.tuple);
        }
    });
    // Datagrams a host reassembled (a whole packet with the addresses, protocol and IP id of fragments): the
    // fragments that leave beyond that point were cut from it again, so they are not older than it.
    struct DatagramKey {
        std::uint8_t proto;
        IpAddr src;
        IpAddr dst;
        std::uint16_t ip_id;
        bool operator==(const DatagramKey&) const = default;
    };
    struct DatagramKeyHash {
        std::size_t operator()(const DatagramKey& k) const noexcept {
            return TupleHash{}(Tuple{k.proto, k.src, k.dst, k.ip_id, 0});
        }
    };
    std::unordered_map<DatagramKey, std::vector<std::int64_t>, DatagramKeyHash> reassembled;
    {
        std::unordered_set<DatagramKey, DatagramKeyHash> fragmented;
        for (const Sighting& s : sightings)
            if ((s.flags & packet_flag::k_fragment) != 0)
                fragmented.insert({s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id});
        for (const Sighting& s : sightings)
            if ((s.flags & packet_flag::k_fragment) == 0 &&
                fragmented.contains({s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id}))
                reassembled[{s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id}].push_back(s.ts_ns);
        for (auto& [k, list] : reassembled) std::sort(list.begin(), list.end());
    }
    // A fragment `x` cannot continue a journey of fragments last seen as `last` when their datagram was reassembled
    // only after x was seen (it was cut from another datagram).
    auto reassembled_in_time = [&](const Sighting& last, const Sighting& x) {
        if ((x.flags & packet_flag::k_fragment) == 0) return true;
        const auto it = reassembled.find({last.tuple.proto, last.tuple.src, last.tuple.dst, x.ip_id});
        if (it == reassembled.end()) return true;
        const auto after = std::lower_bound(it->second.begin(), it->second.end(), last.ts_ns);
        return after == it->second.end() || *after <= x.ts_ns;
    };
    // Among equally good journeys of different origins, one whose step would take far longer than any hop between
    // those points did (ten times the longest, and over a millisecond) is not this packet's: time decides then.
    auto plausible_hop = [&](const Sighting& last, const Sighting& x) {
        const auto it = longest_hop.find(pair_key(last.point, x.point));
        if (it == longest_hop.end()) return true;
        constexpr std::int64_t k_slack_ns = 1'000'000;
        return x.ts_ns - last.ts_ns <= std::max(10 * it->second, k_slack_ns);
    };
    // Phase 2: assignment inside each group, in time order.
    std::vector<std::uint32_t> journey_of(sightings.size(), k_none);
    std::vector<std::uint32_t> first_of;  // journey id -> its first sighting
    std::vector<std::uint8_t> flagged;    // journey id -> ambiguous
    std::vector<OpenJourney> open;
    std::vector<std::uint32_t> version;
    OpenIndex index;
    std::unordered_map<Tuple, std::vector<Tuple>, TupleHash> reverse;  // per group: target -> learned sources
    std::vector<std::uint8_t> dead;  // journey id -> replaced by a second pass over its group
    auto assign_group = [&](std::size_t begin, std::size_t end) {
        open.clear();
        version.clear();
        index.clear();
        if (reverse.bucket_count() > 64) reverse = {};
        else reverse.clear();
        for (std::size_t k = begin; k < end; ++k) {
            const Tuple& t = sightings[order[k]].tuple;
            if (const auto* targets = translations.targets(t))
                for (const Tuple& target : *targets) {
                    auto& list = reverse[target];
                    if (std::find(list.begin(), list.end(), t) == list.end()) list.push_back(t);
                }
        }
        std::vector<RankMark> marks;
        for (std::size_t k = begin; k < end; ++k) {
            const std::uint32_t s = order[k];
            const Sighting& x = sightings[s];
            const int x_rank = rank_of(options, x.point);
            // The best continuation, and whether another journey of a different origin was as good.
            std::uint32_t best = k_none;
            int best_score = 0;
            std::vector<std::uint32_t> rivals;  // equally good candidates of other (last point, last tuple)
            auto consider = [&](std::vector<OpenIndex::Entry>& entries, bool queue) {
                std::size_t kept = 0;
                bool found = false;  // a queue's first fit was found: the rest wait their turn
                for (std::size_t e = 0; e < entries.size(); ++e) {
                    const OpenIndex::Entry entry = entries[e];
                    if (found) {
                        entries[kept++] = entry;
                        continue;
                    }
                    OpenJourney& j = open[entry.open];
                    const Sighting& last = sightings[j.last];
                    if (version[entry.open] != entry.version || x.ts_ns - last.ts_ns > options.max_hop_gap_ns)
                        continue;  // stale: grown since, or too old to grow (time only moves on): dropped
                    entries[kept++] = entry;
                    if (entry.open == best || std::find(rivals.begin(), rivals.end(), entry.open) != rivals.end())
                        continue;
                    if (std::find(j.points.begin(), j.points.end(), x.point) != j.points.end()) continue;
                    if (x.ts_ns > last.ts_ns && x.ttl > j.min_ttl) continue;  // TTL never grows
                    const int score = step_score(last, x, rank_of(options, last.point), x_rank, translations);
                    if (score == 0) continue;
                    if (x_rank != k_unknown_rank) {
                        marks = j.marks;
                        marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
                        if (!walkable(marks)) continue;
                    }
                    found = queue;
                    if (score < best_score) continue;
                    if (score > best_score) {
                        best = entry.open;
                        best_score = score;
                        rivals.clear();
                        continue;
                    }
                    // As good as the best: the same origin (last point and tuple) is a queue, first in first out;
                    // another origin is a journey that could be this packet just as well.
                    const Sighting& b = sightings[open[best].last];
                    const bool same_origin = b.point == last.point && b.tuple == last.tuple;
                    if (same_origin) {
                        if (entry.open < best) best = entry.open;
                    } else {
                        rivals.push_back(entry.open);
                    }
                }
                entries.resize(kept);
            };
            const auto rev = reverse.find(x.tuple);
            if (x.uncertain) {
                // Its ports are a guess: every open journey of the group is a candidate (a fragment's group is small:
                // one datagram id, offset and length).
                std::vector<OpenIndex::Entry> all;
                for (std::uint32_t o = 0; o < open.size(); ++o) all.push_back({o, version[o]});
                consider(all, false);
            } else {
                // A port-rewriting step scores at most 1 * 2 + 1: past a better candidate, no need to look there.
                constexpr int k_best_port_rewrite = 3;
                // A rewrite needs a routed step: the TTL drops (sightings of equal time come higher TTL first), and
                // never between points of one L2 segment.
                auto rewrite_from = [&](std::uint32_t point, std::uint8_t ttl) {
                    const Link link = link_between(rank_of(options, point), x_rank);
                    return ttl >= x.ttl && link != Link::l2 && link != Link::containers;
                };
                index.candidates(
                    x.tuple, rev == reverse.end() ? nullptr : &rev->second, consider,
                    [&] { return best_score <= k_best_port_rewrite; }, rewrite_from);
            }
            if (best != k_none) {
                // Rivals of the same origin as each other collapse to one; of another origin than the winner,
                // they make the choice undecidable.
                if (!rivals.empty()) {
                    std::vector<std::uint32_t> all = rivals;
                    all.push_back(best);
                    std::vector<std::uint32_t> timely;
                    for (const std::uint32_t c : all)
                        if (plausible_hop(sightings[open[c].last], x) &&
                            reassembled_in_time(sightings[open[c].last], x))
                            timely.push_back(c);
                    if (!timely.empty() && timely.size() < all.size()) {
                        best = *std::min_element(timely.begin(), timely.end());
                        rivals.clear();
                        for (const std::uint32_t c : timely)
                            if (c != best) rivals.push_back(c);
                    }
                }
                const Sighting& b = sightings[open[best].last];
                bool ambiguous = false;
                for (const std::uint32_t r : rivals) {
                    const Sighting& l = sightings[open[r].last];
                    if (l.point == b.point && l.tuple == b.tuple) {
                        best = std::min(best, r);
                        continue;
                    }
                    ambiguous = true;
                    flagged[open[r].id] = 1;
                }
                // The oldest of the equally good ones takes it (queues are first-in, first-out); flagged.
                if (ambiguous)
                    for (const std::uint32_t r : rivals) best = std::min(best, r);
                OpenJourney& j = open[best];
                if (ambiguous) flagged[j.id] = 1;
                const Sighting& last = sightings[j.last];
                if (x.ts_ns > last.ts_ns || x.ttl <= last.ttl) j.last = s;
                j.points.push_back(x.point);
                j.min_ttl = std::min(j.min_ttl, x.ttl);
                if (x_rank != k_unknown_rank) j.marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
                journey_of[s] = j.id;
                ++version[best];
                index.file(sightings[j.last].tuple, sightings[j.last].point, sightings[j.last].ttl, best,
                           version[best]);
                continue;
            }
            const auto id = static_cast<std::uint32_t>(first_of.size());
            first_of.push_back(s);
            flagged.push_back(0);
            journey_of[s] = id;
            OpenJourney j;
            j.id = id;
            j.last = s;
            j.min_ttl = x.ttl;
            j.points.push_back(x.point);
            if (x_rank != k_unknown_rank) j.marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
            open.push_back(std::move(j));
            version.push_back(0);
            index.file(x.tuple, x.point, x.ttl, static_cast<std::uint32_t>(open.size() - 1), 0);
        }
    };
    // Groups that left journeys undecided: [begin, end) of `order`, and the first journey id they made.
    struct Undecided {
        std::size_t begin;
        std::size_t end;
        std::uint32_t first_id;
    };
    std::vector<Undecided> undecided;
    for_each_group(sightings, order, [&](std::size_t begin, std::size_t end) {
        const auto first_id = static_cast<std::uint32_t>(first_of.size());
        assign_group(begin, end);
        if (std::any_of(flagged.begin() + first_id, flagged.end(), [](std::uint8_t f) { return f != 0; }))
            undecided.push_back({begin, end, first_id});
    });
    // Flow state: what the decided journeys rewrote is a translation too (a reply de-NATed to one container says
    // whose the masqueraded tuple was). Groups left undecided are assigned again with it.
    if (!undecided.empty()) {
        dead.assign(first_of.size(), 0);
        std::vector<std::uint32_t> last_of(first_of.size(), k_none);
        bool learned = false;
        for (const std::uint32_t s : order) {
            const std::uint32_t j = journey_of[s];
            if (flagged[j] == 0 && last_of[j] != k_none) {
                const Tuple& from = sightings[last_of[j]].tuple;
                // Only where nothing was known: a learned translation is never overruled by a derived one.
                if (from != sightings[s].tuple && translations.targets(from) == nullptr &&
                    !sightings[last_of[j]].uncertain && !sightings[s].uncertain) {
                    translations.add(from, sightings[s].tuple);
                    learned = true;
                }
            }
            last_of[j] = s;
        }
        for (const Undecided& u : learned ? undecided : std::vector<Undecided>{}) {
            for (std::size_t k = u.begin; k < u.end; ++k) dead[journey_of[order[k]]] = 1;
            assign_group(u.begin, u.end);
        }
        dead.resize(first_of.size(), 0);
    }

    // Number journeys by first time, then fingerprint, then packet id: independent of the input order.
    std::vector<std::uint32_t> by_time;
    by_time.reserve(first_of.size());
    for (std::uint32_t j = 0; j < first_of.size(); ++j)
        if (dead.empty() || dead[j] == 0) by_time.push_back(j);
    std::sort(by_time.begin(), by_time.end(), [&](std::uint32_t a, std::uint32_t b) {
        const Sighting& x = sightings[first_of[a]];
        const Sighting& y = sightings[first_of[b]];
        if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
        if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
        return x.packet_id < y.packet_id;
    });
    std::vector<std::uint32_t> renumber(first_of.size(), k_none);
    for (std::uint32_t n = 0; n < by_time.size(); ++n) renumber[by_time[n]] = n;

    Journeys result;
    result.offsets.assign(by_time.size() + 1, 0);
    result.ambiguous.assign(by_time.size(), 0);
    for (std::uint32_t n = 0; n < by_time.size(); ++n) result.ambiguous[n] = flagged[by_time[n]];
    for (const std::uint32_t s : order) ++result.offsets[renumber[journey_of[s]] + 1];
    std::partial_sum(result.offsets.begin(), result.offsets.end(), result.offsets.begin());
    result.members.resize(order.size());
    std::vector<std::uint32_t> fill(result.offsets.begin(), result.offsets.end() - 1);
    for (const std::uint32_t s : order) result.members[fill[renumber[journey_of[s]]]++] = s;  // time order
    return result;
}

}  // namespace hoptrace::correlate
