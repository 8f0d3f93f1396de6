#pragma once
// Every hop sample as CSV (one row per pair of consecutive sightings of a journey), for people who plot in their
// own tools: flow_id,proto,direction,journey_id,from,to,from_ts_ns,to_ts_ns,latency_ns. Streams from the store
// (model.hpp's for_each_hop_sample): memory does not grow with the capture.

#include "report/flow_filter.hpp"
#include "store/database.hpp"

#include <optional>
#include <ostream>

namespace hoptrace::report {

// `flows` selects flows (all without one).
void write_csv(const store::Database& db, std::ostream& out, const std::optional<FlowFilter>& flows = std::nullopt);

}  // namespace hoptrace::report
