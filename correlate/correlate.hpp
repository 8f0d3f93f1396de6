#pragma once
// `hoptrace correlate`: reads the sightings from the store, matches them into journeys, derives flows,
// rewrites, hop statistics and losses, and writes all of it back in one transaction. Re-running it replaces
// the previous result with an identical one.

#include "correlate/matcher.hpp"
#include "correlate/roles.hpp"
#include "store/database.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hoptrace::correlate {

struct Summary {
    std::uint64_t sightings = 0;
    std::uint64_t journeys = 0;
    std::uint64_t flows = 0;
    std::uint64_t rewrites = 0;
    std::uint64_t losses = 0;
    std::uint64_t ambiguous = 0;        // journeys flagged ambiguous
    std::uint64_t rule_walks_tied = 0;  // traced packets (rule_traces walks) tied to a journey
    std::vector<RoleGuess> inferred;    // roles inferred for points that had none (names in `inferred_names`)
    std::vector<std::string> inferred_names;
};

// Sets the roles a user gave (NAME -> ROLE, ROLE one of container|veth|bridge|uplink|other), evidence "given".
// Throws store::Error naming an unknown point or role.
void set_roles(store::Database& db, const std::map<std::string, std::string>& roles);

// Points without a known role (imported files: role_evidence empty or inferred) get an inferred one first
// (correlate/roles.hpp), stored with its evidence and returned in Summary::inferred.
Summary run(store::Database& db, const MatchOptions& options = {});

// What the points' roles tell the matcher: containers, the rank of each role on the path, and the points that
// merge several interfaces (Linux cooked v1).
void apply_roles(std::span<const store::Point> points, MatchOptions& options);

}  // namespace hoptrace::correlate
