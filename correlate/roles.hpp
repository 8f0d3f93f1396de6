#pragma once
// Roles of imported points, inferred from their names and from the traffic they share, so that imports get the
// same walk constraint, observers, loss rules and tie ordering as live captures (whose roles come from topology
// discovery). A user corrects an inference with --role NAME=ROLE.

#include "correlate/matcher.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hoptrace::correlate {

struct RoleGuess {
    std::uint32_t point = 0;
    std::string role;      // container | veth | bridge | uplink | other
    std::string evidence;  // one line a person can check: "name 'veth1a2b'", "sees 2 containers' frames" …
};

// `names[i]` is the point name of `points[i]` (the interface name when the file said it). Sightings of every point
// are considered; the result has one guess per point in `points`, `other` with the reason when nothing tells.
//
// The rules (docs/correlation.md, "Roles of imported points"): a name says it first (veth…, docker0, br-…, cni…,
// virbr…); otherwise the traffic: points that see the same frames (same fingerprint, tuple and TTL) are one L2
// segment; a point that sees those packets one TTL lower (routed) and alone is the uplink; on the segment, the
// point closest in time to the uplink is the bridge, and of the others, pairs that share frames are a container
// (farther from the uplink) and its veth.
std::vector<RoleGuess> infer_roles(std::span<const Sighting> sightings, std::span<const std::uint32_t> points,
                                   std::span<const std::string> names);

}  // namespace hoptrace::correlate
