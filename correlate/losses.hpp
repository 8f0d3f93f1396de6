#pragma once
// The last step of analyse(): where packets stopped although their path goes on (Analysis::losses).

#include "correlate/analysis.hpp"

#include <span>

namespace hoptrace::correlate {

// Needs the journeys' flows, directions and relations (out.journeys, out.flows) already analysed.
void find_losses(std::span<const Sighting> sightings, const Journeys& journeys, const MatchOptions& options,
                 Analysis& out);

}  // namespace hoptrace::correlate
