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

// Datagrams a host reassembled are found by what their fragments share: addresses, protocol and IP id.
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

// The best continuation found for a sighting so far, and the equally good candidates of other origins.
struct Choice {
    std::uint32_t best = k_none;
    int best_score = 0;
    std::vector<std::uint32_t> rivals;  // equally good candidates of other (last point, last tuple)
};

// Groups that left journeys undecided: [begin, end) of the order, and the first journey id they made.
struct Undecided {
    std::size_t begin;
    std::size_t end;
    std::uint32_t first_id;
};

// match(), step by step: the sightings in order, translations learned (phase 1), each fingerprint group assigned
// in time order (phase 2), undecided groups assigned again with what the decided journeys showed, and the journeys
// numbered.
class Matcher {
public:
    Matcher(std::span<const Sighting> sightings, const MatchOptions& options)
        : m_sightings(sightings), m_options(options), m_journey_of(sightings.size(), k_none) {}

    Journeys run() {
        sort_order();
        learn_translations();
        index_reassembled();
        std::vector<Undecided> undecided;
        for_each_group(m_sightings, m_order, [&](std::size_t begin, std::size_t end) {
            const auto first_id = static_cast<std::uint32_t>(m_first_of.size());
            assign_group(begin, end);
            if (std::any_of(m_flagged.begin() + first_id, m_flagged.end(), [](std::uint8_t f) { return f != 0; }))
                undecided.push_back({begin, end, first_id});
        });
        if (!undecided.empty()) decide_again(undecided);
        return numbered();
    }

private:
    [[nodiscard]] int rank(std::uint32_t point) const { return rank_of(m_options, point); }

    // Time order; at equal timestamps the higher TTL first (it had crossed fewer routers), then the role order.
    void sort_order() {
        m_order.reserve(m_sightings.size());
        for (std::uint32_t i = 0; i < m_sightings.size(); ++i)
            if (m_sightings[i].fingerprint != 0) m_order.push_back(i);
        std::sort(m_order.begin(), m_order.end(), [&](std::uint32_t a, std::uint32_t b) {
            const Sighting& x = m_sightings[a];
            const Sighting& y = m_sightings[b];
            if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
            if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
            if (x.ttl != y.ttl) return x.ttl > y.ttl;
            const int rx = rank(x.point);
            const int ry = rank(y.point);
            if (rx != ry) return rx < ry;
            if (x.point != y.point) return x.point < y.point;
            return x.packet_id < y.packet_id;
        });
    }

    static std::uint64_t pair_key(std::uint32_t a, std::uint32_t b) { return (std::uint64_t{a} << 32) | b; }

    // Phase 1: learn NAT translations from the kernel's own entries and from groups that can only be one journey,
    // and the longest hop each pair of points showed in those groups: what a hop between them can take.
    void learn_translations() {
        for (const auto& [from, to] : m_options.known_translations) m_translations.add(from, to);
        for_each_group(m_sightings, m_order, [&](std::size_t begin, std::size_t end) {
            const std::span<const std::uint32_t> group(m_order.data() + begin, end - begin);
            if (!unambiguous(m_sightings, group, m_options)) return;
            for (std::size_t i = 1; i < group.size(); ++i) {
                const Sighting& a = m_sightings[group[i - 1]];
                const Sighting& b = m_sightings[group[i]];
                auto& longest = m_longest_hop[pair_key(a.point, b.point)];
                longest = std::max(longest, b.ts_ns - a.ts_ns);
                if (a.tuple != b.tuple) m_translations.add(a.tuple, b.tuple);
            }
        });
    }

    // Datagrams a host reassembled (a whole packet with the addresses, protocol and IP id of fragments): the
    // fragments that leave beyond that point were cut from it again, so they are not older than it.
    void index_reassembled() {
        std::unordered_set<DatagramKey, DatagramKeyHash> fragmented;
        for (const Sighting& s : m_sightings)
            if ((s.flags & packet_flag::k_fragment) != 0)
                fragmented.insert({s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id});
        for (const Sighting& s : m_sightings)
            if ((s.flags & packet_flag::k_fragment) == 0 &&
                fragmented.contains({s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id}))
                m_reassembled[{s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id}].push_back(s.ts_ns);
        for (auto& [k, list] : m_reassembled) std::sort(list.begin(), list.end());
    }

    // A fragment `x` cannot continue a journey of fragments last seen as `last` when their datagram was reassembled
    // only after x was seen (it was cut from another datagram).
    [[nodiscard]] bool reassembled_in_time(const Sighting& last, const Sighting& x) const {
        if ((x.flags & packet_flag::k_fragment) == 0) return true;
        const auto it = m_reassembled.find({last.tuple.proto, last.tuple.src, last.tuple.dst, x.ip_id});
        if (it == m_reassembled.end()) return true;
        const auto after = std::lower_bound(it->second.begin(), it->second.end(), last.ts_ns);
        return after == it->second.end() || *after <= x.ts_ns;
    }

    // Among equally good journeys of different origins, one whose step would take far longer than any hop between
    // those points did (ten times the longest, and over a millisecond) is not this packet's: time decides then.
    [[nodiscard]] bool plausible_hop(const Sighting& last, const Sighting& x) const {
        const auto it = m_longest_hop.find(pair_key(last.point, x.point));
        if (it == m_longest_hop.end()) return true;
        constexpr std::int64_t k_slack_ns = 1'000'000;
        return x.ts_ns - last.ts_ns <= std::max(10 * it->second, k_slack_ns);
    }

    // Phase 2: assignment inside one group, in time order.
    void assign_group(std::size_t begin, std::size_t end) {
        m_open.clear();
        m_version.clear();
        m_index.clear();
        if (m_reverse.bucket_count() > 64) m_reverse = {};
        else m_reverse.clear();
        for (std::size_t k = begin; k < end; ++k) {
            const Tuple& t = m_sightings[m_order[k]].tuple;
            if (const auto* targets = m_translations.targets(t))
                for (const Tuple& target : *targets) {
                    auto& list = m_reverse[target];
                    if (std::find(list.begin(), list.end(), t) == list.end()) list.push_back(t);
                }
        }
        for (std::size_t k = begin; k < end; ++k) {
            const std::uint32_t s = m_order[k];
            Choice choice = choose(m_sightings[s]);
            if (choice.best != k_none) extend(decide(m_sightings[s], choice), s);
            else start(s);
        }
    }

    // The open journeys `x` may continue, best first.
    Choice choose(const Sighting& x) {
        Choice choice;
        const int x_rank = rank(x.point);
        auto consider = [&](std::vector<OpenIndex::Entry>& entries, bool queue) {
            consider_entries(x, x_rank, entries, queue, choice);
        };
        if (x.uncertain) {
            // Its ports are a guess: every open journey of the group is a candidate (a fragment's group is small:
            // one datagram id, offset and length).
            std::vector<OpenIndex::Entry> all;
            for (std::uint32_t o = 0; o < m_open.size(); ++o) all.push_back({o, m_version[o]});
            consider(all, false);
            return choice;
        }
        // A port-rewriting step scores at most 1 * 2 + 1: past a better candidate, no need to look there.
        constexpr int k_best_port_rewrite = 3;
        // A rewrite needs a routed step: the TTL drops (sightings of equal time come higher TTL first), and never
        // between points of one L2 segment.
        auto rewrite_from = [&](std::uint32_t point, std::uint8_t ttl) {
            const Link link = link_between(rank(point), x_rank);
            return ttl >= x.ttl && link != Link::l2 && link != Link::containers;
        };
        const auto rev = m_reverse.find(x.tuple);
        m_index.candidates(
            x.tuple, rev == m_reverse.end() ? nullptr : &rev->second, consider,
            [&] { return choice.best_score <= k_best_port_rewrite; }, rewrite_from);
        return choice;
    }

    // Scores each live entry of one index list as a continuation for `x`; stale entries are dropped from the list.
    void consider_entries(const Sighting& x, int x_rank, std::vector<OpenIndex::Entry>& entries, bool queue,
                          Choice& c) {
        std::size_t kept = 0;
        bool found = false;  // a queue's first fit was found: the rest wait their turn
        for (const OpenIndex::Entry entry : entries) {
            if (found) {
                entries[kept++] = entry;
                continue;
            }
            OpenJourney& j = m_open[entry.open];
            const Sighting& last = m_sightings[j.last];
            if (m_version[entry.open] != entry.version || x.ts_ns - last.ts_ns > m_options.max_hop_gap_ns)
                continue;  // stale: grown since, or too old to grow (time only moves on): dropped
            entries[kept++] = entry;
            if (entry.open == c.best || std::find(c.rivals.begin(), c.rivals.end(), entry.open) != c.rivals.end())
                continue;
            if (std::find(j.points.begin(), j.points.end(), x.point) != j.points.end()) continue;
            if (x.ts_ns > last.ts_ns && x.ttl > j.min_ttl) continue;  // TTL never grows
            const int score = step_score(last, x, rank(last.point), x_rank, m_translations);
            if (score == 0) continue;
            if (x_rank != k_unknown_rank) {
                m_marks = j.marks;
                m_marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
                if (!walkable(m_marks)) continue;
            }
            found = queue;
            if (score < c.best_score) continue;
            if (score > c.best_score) {
                c.best = entry.open;
                c.best_score = score;
                c.rivals.clear();
                continue;
            }
            // As good as the best: the same origin (last point and tuple) is a queue, first in first out; another
            // origin is a journey that could be this packet just as well.
            const Sighting& b = m_sightings[m_open[c.best].last];
            if (b.point == last.point && b.tuple == last.tuple) {
                if (entry.open < c.best) c.best = entry.open;
            } else {
                c.rivals.push_back(entry.open);
            }
        }
        entries.resize(kept);
    }

    // Which open journey takes `x`. Rivals of the same origin as each other collapse to one; of another origin
    // than the winner, they make the choice undecidable unless time rules some out; then the oldest of the
    // equally good ones takes it (queues are first-in, first-out), and all of them are flagged.
    std::uint32_t decide(const Sighting& x, Choice& c) {
        if (!c.rivals.empty()) {
            std::vector<std::uint32_t> all = c.rivals;
            all.push_back(c.best);
            std::vector<std::uint32_t> timely;
            for (const std::uint32_t o : all)
                if (plausible_hop(m_sightings[m_open[o].last], x) &&
                    reassembled_in_time(m_sightings[m_open[o].last], x))
                    timely.push_back(o);
            if (!timely.empty() && timely.size() < all.size()) {
                c.best = *std::min_element(timely.begin(), timely.end());
                c.rivals.clear();
                for (const std::uint32_t o : timely)
                    if (o != c.best) c.rivals.push_back(o);
            }
        }
        const Sighting& b = m_sightings[m_open[c.best].last];
        bool ambiguous = false;
        for (const std::uint32_t r : c.rivals) {
            const Sighting& l = m_sightings[m_open[r].last];
            if (l.point == b.point && l.tuple == b.tuple) {
                c.best = std::min(c.best, r);
                continue;
            }
            ambiguous = true;
            m_flagged[m_open[r].id] = 1;
        }
        if (ambiguous) {
            for (const std::uint32_t r : c.rivals) c.best = std::min(c.best, r);
            m_flagged[m_open[c.best].id] = 1;
        }
        return c.best;
    }

    // Open journey `open` takes sighting s.
    void extend(std::uint32_t open, std::uint32_t s) {
        const Sighting& x = m_sightings[s];
        const int x_rank = rank(x.point);
        OpenJourney& j = m_open[open];
        const Sighting& last = m_sightings[j.last];
        if (x.ts_ns > last.ts_ns || x.ttl <= last.ttl) j.last = s;
        j.points.push_back(x.point);
        j.min_ttl = std::min(j.min_ttl, x.ttl);
        if (x_rank != k_unknown_rank) j.marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
        m_journey_of[s] = j.id;
        ++m_version[open];
        const Sighting& now = m_sightings[j.last];
        m_index.file(now.tuple, now.point, now.ttl, open, m_version[open]);
    }

    // Sighting s continues no journey: it begins one.
    void start(std::uint32_t s) {
        const Sighting& x = m_sightings[s];
        const int x_rank = rank(x.point);
        const auto id = static_cast<std::uint32_t>(m_first_of.size());
        m_first_of.push_back(s);
        m_flagged.push_back(0);
        m_journey_of[s] = id;
        OpenJourney j;
        j.id = id;
        j.last = s;
        j.min_ttl = x.ttl;
        j.points.push_back(x.point);
        if (x_rank != k_unknown_rank) j.marks.push_back({x.ts_ns, x.ttl, static_cast<std::int8_t>(x_rank)});
        m_open.push_back(std::move(j));
        m_version.push_back(0);
        m_index.file(x.tuple, x.point, x.ttl, static_cast<std::uint32_t>(m_open.size() - 1), 0);
    }

    // Flow state: what the decided journeys rewrote is a translation too (a reply de-NATed to one container says
    // whose the masqueraded tuple was). Groups left undecided are assigned again with it.
    void decide_again(const std::vector<Undecided>& undecided) {
        m_dead.assign(m_first_of.size(), 0);
        std::vector<std::uint32_t> last_of(m_first_of.size(), k_none);
        bool learned = false;
        for (const std::uint32_t s : m_order) {
            const std::uint32_t j = m_journey_of[s];
            if (m_flagged[j] == 0 && last_of[j] != k_none) {
                const Tuple& from = m_sightings[last_of[j]].tuple;
                // Only where nothing was known: a learned translation is never overruled by a derived one.
                if (from != m_sightings[s].tuple && m_translations.targets(from) == nullptr &&
                    !m_sightings[last_of[j]].uncertain && !m_sightings[s].uncertain) {
                    m_translations.add(from, m_sightings[s].tuple);
                    learned = true;
                }
            }
            last_of[j] = s;
        }
        if (learned) {
            for (const Undecided& u : undecided) {
                for (std::size_t k = u.begin; k < u.end; ++k) m_dead[m_journey_of[m_order[k]]] = 1;
                assign_group(u.begin, u.end);
            }
        }
        m_dead.resize(m_first_of.size(), 0);
    }

    // Journeys numbered by first time, then fingerprint, then packet id: independent of the input order.
    Journeys numbered() const {
        std::vector<std::uint32_t> by_time;
        by_time.reserve(m_first_of.size());
        for (std::uint32_t j = 0; j < m_first_of.size(); ++j)
            if (m_dead.empty() || m_dead[j] == 0) by_time.push_back(j);
        std::sort(by_time.begin(), by_time.end(), [&](std::uint32_t a, std::uint32_t b) {
            const Sighting& x = m_sightings[m_first_of[a]];
            const Sighting& y = m_sightings[m_first_of[b]];
            if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
            if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
            return x.packet_id < y.packet_id;
        });
        std::vector<std::uint32_t> renumber(m_first_of.size(), k_none);
        for (std::uint32_t n = 0; n < by_time.size(); ++n) renumber[by_time[n]] = n;

        Journeys result;
        result.offsets.assign(by_time.size() + 1, 0);
        result.ambiguous.assign(by_time.size(), 0);
        for (std::uint32_t n = 0; n < by_time.size(); ++n) result.ambiguous[n] = m_flagged[by_time[n]];
        for (const std::uint32_t s : m_order) ++result.offsets[renumber[m_journey_of[s]] + 1];
        std::partial_sum(result.offsets.begin(), result.offsets.end(), result.offsets.begin());
        result.members.resize(m_order.size());
        std::vector<std::uint32_t> fill(result.offsets.begin(), result.offsets.end() - 1);
        for (const std::uint32_t s : m_order) result.members[fill[renumber[m_journey_of[s]]]++] = s;  // time order
        return result;
    }

    std::span<const Sighting> m_sightings;
    const MatchOptions& m_options;
    std::vector<std::uint32_t> m_order;
    Translations m_translations;
    std::unordered_map<std::uint64_t, std::int64_t> m_longest_hop;  // pair_key -> longest hop
    std::unordered_map<DatagramKey, std::vector<std::int64_t>, DatagramKeyHash> m_reassembled;
    std::vector<std::uint32_t> m_journey_of;  // sighting -> journey id
    std::vector<std::uint32_t> m_first_of;    // journey id -> its first sighting
    std::vector<std::uint8_t> m_flagged;      // journey id -> ambiguous
    std::vector<std::uint8_t> m_dead;         // journey id -> replaced by a second pass over its group
    // The group being assigned:
    std::vector<OpenJourney> m_open;
    std::vector<std::uint32_t> m_version;
    OpenIndex m_index;
    std::unordered_map<Tuple, std::vector<Tuple>, TupleHash> m_reverse;  // target -> learned sources
    std::vector<RankMark> m_marks;                                       // scratch for walkable()
};

}  // namespace

Journeys match(std::span<const Sighting> sightings, const MatchOptions& options) {
    return Matcher(sightings, options).run();
}

}  // namespace hoptrace::correlate
