#include "correlate/matcher.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

namespace hoptrace::correlate {
namespace {

constexpr std::uint32_t k_none = std::numeric_limits<std::uint32_t>::max();

// Tuple translations seen in unambiguous journeys: a tuple -> the tuples the same packet had one hop later.
using Translations = std::unordered_map<Tuple, std::vector<Tuple>, TupleHash>;

void add_translation(Translations& translations, const Tuple& from, const Tuple& to) {
    auto& targets = translations[from];
    if (std::find(targets.begin(), targets.end(), to) == targets.end()) targets.push_back(to);
}

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

// Whether a packet can go from point a to point b with tuple `from` becoming `to`: the same tuple, or one
// NAT step — but nothing rewrites a packet between two containers' own interfaces.
bool plausible_step(std::uint32_t a, std::uint32_t b, const Tuple& from, const Tuple& to, const MatchOptions& options) {
    if (from == to) return true;
    if (options.container_points.contains(a) && options.container_points.contains(b)) return false;
    return one_nat_step(from, to);
}

// Directed pairs of points seen one after the other in unambiguous journeys (both ways: replies go back).
class Adjacency {
public:
    void add(std::uint32_t a, std::uint32_t b) {
        m_pairs.insert(key(a, b));
        m_pairs.insert(key(b, a));
    }
    [[nodiscard]] bool allows(std::uint32_t a, std::uint32_t b) const {
        return m_pairs.empty() || m_pairs.contains(key(a, b));
    }

private:
    static std::uint64_t key(std::uint32_t a, std::uint32_t b) { return (std::uint64_t{a} << 32) | b; }
    std::unordered_set<std::uint64_t> m_pairs;
};

// A group is unambiguous when every sighting is at a different point, consecutive sightings are close in
// time and each step is plausible: then it is one journey and its rewrites can be trusted.
bool unambiguous(std::span<const Sighting> sightings, std::span<const std::uint32_t> group,
                 const MatchOptions& options) {
    constexpr std::size_t k_max_points_on_a_path = 32;
    if (group.size() < 2 || group.size() > k_max_points_on_a_path) return false;
    std::array<std::uint32_t, k_max_points_on_a_path> points{};
    for (std::size_t i = 0; i < group.size(); ++i) points[i] = sightings[group[i]].point;
    std::sort(points.begin(), points.begin() + static_cast<std::ptrdiff_t>(group.size()));
    if (std::adjacent_find(points.begin(), points.begin() + static_cast<std::ptrdiff_t>(group.size())) !=
        points.begin() + static_cast<std::ptrdiff_t>(group.size()))
        return false;
    for (std::size_t i = 1; i < group.size(); ++i) {
        const Sighting& a = sightings[group[i - 1]];
        const Sighting& b = sightings[group[i]];
        if (b.ts_ns - a.ts_ns > options.max_hop_gap_ns || !plausible_step(a.point, b.point, a.tuple, b.tuple, options))
            return false;
    }
    return true;
}

// How well sighting `next` continues a journey whose latest sighting is `last`: 3 = the learned
// translation, 2 = same tuple, 1 = one plausible NAT step, 0 = not this journey.
int continuation_score(const Sighting& last, const Sighting& next, const Translations& translations,
                       const Adjacency& adjacency, const MatchOptions& options) {
    if (!adjacency.allows(last.point, next.point)) return 0;
    if (next.tuple == last.tuple) return 2;
    if (auto it = translations.find(last.tuple); it != translations.end()) {
        const auto& targets = it->second;
        return std::find(targets.begin(), targets.end(), next.tuple) != targets.end() ? 3 : 0;
    }
    return plausible_step(last.point, next.point, last.tuple, next.tuple, options) ? 1 : 0;
}

struct OpenJourney {
    std::uint32_t id;
    std::uint32_t last;                 // sighting index
    std::vector<std::uint32_t> points;  // points already in the journey (a handful)
};

}  // namespace

Journeys match(std::span<const Sighting> sightings, const MatchOptions& options) {
    std::vector<std::uint32_t> order;
    order.reserve(sightings.size());
    for (std::uint32_t i = 0; i < sightings.size(); ++i)
        if (sightings[i].fingerprint != 0) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        const Sighting& x = sightings[a];
        const Sighting& y = sightings[b];
        if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
        if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
        if (x.point != y.point) return x.point < y.point;
        return x.packet_id < y.packet_id;
    });

    // Phase 1: learn NAT translations and which points are next to each other from groups that can only be
    // one journey.
    Translations translations;
    Adjacency adjacency;
    for_each_group(sightings, order, [&](std::size_t begin, std::size_t end) {
        const std::span<const std::uint32_t> group(order.data() + begin, end - begin);
        if (!unambiguous(sightings, group, options)) return;
        for (std::size_t i = 1; i < group.size(); ++i) {
            adjacency.add(sightings[group[i - 1]].point, sightings[group[i]].point);
            const Tuple& a = sightings[group[i - 1]].tuple;
            const Tuple& b = sightings[group[i]].tuple;
            if (a == b) continue;
            add_translation(translations, a, b);
            add_translation(translations, b.reversed(), a.reversed());  // the reply undoes the rewrite
        }
    });

    // Phase 2: greedy assignment inside each group, in time order.
    std::vector<std::uint32_t> journey_of(sightings.size(), k_none);
    std::vector<std::uint32_t> first_of;  // journey id -> its first sighting
    std::vector<OpenJourney> open;
    for_each_group(sightings, order, [&](std::size_t begin, std::size_t end) {
        open.clear();
        for (std::size_t k = begin; k < end; ++k) {
            const std::uint32_t s = order[k];
            const Sighting& x = sightings[s];
            OpenJourney* best = nullptr;
            int best_score = 0;
            std::size_t examined = 0;
            for (OpenJourney& j : open) {
                const Sighting& last = sightings[j.last];
                if (x.ts_ns - last.ts_ns > options.max_hop_gap_ns) continue;
                if (++examined > options.max_candidates) break;
                if (std::find(j.points.begin(), j.points.end(), x.point) != j.points.end()) continue;
                const int score = continuation_score(last, x, translations, adjacency, options);
                if (score > best_score) {
                    best = &j;
                    best_score = score;
                    if (score == 3) break;
                }
            }
            if (best != nullptr) {
                best->last = s;
                best->points.push_back(x.point);
                journey_of[s] = best->id;
                continue;
            }
            const auto id = static_cast<std::uint32_t>(first_of.size());
            first_of.push_back(s);
            journey_of[s] = id;
            // Drop journeys that can no longer grow before the list gets long.
            if (open.size() >= 2 * options.max_candidates) {
                std::erase_if(open, [&](const OpenJourney& j) {
                    return x.ts_ns - sightings[j.last].ts_ns > options.max_hop_gap_ns;
                });
            }
            open.push_back(OpenJourney{id, s, {x.point}});
        }
    });

    // Number journeys by first time, then fingerprint, then packet id: independent of the input order.
    std::vector<std::uint32_t> by_time(first_of.size());
    std::iota(by_time.begin(), by_time.end(), 0U);
    std::sort(by_time.begin(), by_time.end(), [&](std::uint32_t a, std::uint32_t b) {
        const Sighting& x = sightings[first_of[a]];
        const Sighting& y = sightings[first_of[b]];
        if (x.ts_ns != y.ts_ns) return x.ts_ns < y.ts_ns;
        if (x.fingerprint != y.fingerprint) return x.fingerprint < y.fingerprint;
        return x.packet_id < y.packet_id;
    });
    std::vector<std::uint32_t> renumber(first_of.size());
    for (std::uint32_t n = 0; n < by_time.size(); ++n) renumber[by_time[n]] = n;

    Journeys result;
    result.offsets.assign(first_of.size() + 1, 0);
    for (const std::uint32_t s : order) ++result.offsets[renumber[journey_of[s]] + 1];
    std::partial_sum(result.offsets.begin(), result.offsets.end(), result.offsets.begin());
    result.members.resize(order.size());
    std::vector<std::uint32_t> fill(result.offsets.begin(), result.offsets.end() - 1);
    for (const std::uint32_t s : order) result.members[fill[renumber[journey_of[s]]]++] = s;  // time order
    return result;
}

}  // namespace hoptrace::correlate
