#pragma once
// `hoptrace correlate`: reads the sightings from the store, matches them into journeys, derives flows,
// rewrites, hop statistics and losses, and writes all of it back in one transaction. Re-running it replaces
// the previous result with an identical one.

#include "correlate/matcher.hpp"
#include "store/database.hpp"

#include <cstdint>

namespace hoptrace::correlate {

struct Summary {
    std::uint64_t sightings = 0;
    std::uint64_t journeys = 0;
    std::uint64_t flows = 0;
    std::uint64_t rewrites = 0;
    std::uint64_t losses = 0;
};

Summary run(store::Database& db, const MatchOptions& options = {});

// What the points' roles tell the matcher: containers, the rank of each role on the path, and the points that
// merge several interfaces (Linux cooked v1).
void apply_roles(std::span<const store::Point> points, MatchOptions& options);

}  // namespace hoptrace::correlate
