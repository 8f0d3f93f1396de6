#pragma once
// The options that say where to capture, shared by `topology`, `capture` and `trace`: targets (--netns,
// --pid, --container), --host-netns, --dest and --point overrides; and their resolution into namespaces
// and capture points.

#include "cli/command.hpp"
#include "tracer/netns.hpp"
#include "tracer/topology.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace::cli {

struct TargetOptions {
    std::vector<std::string> netns;
    std::vector<std::string> pids;
    std::vector<std::string> containers;
    std::string host_netns;
    std::string dest;
    std::vector<std::string> points;  // NS:IF[=NAME]

    void add_to(po::options_description& options);
    [[nodiscard]] bool has_target() const { return !netns.empty() || !pids.empty() || !containers.empty(); }
};

// Namespaces by index (0 = host) and the points to capture, each naming its namespace by index.
struct Resolved {
    std::vector<std::unique_ptr<Netns>> namespaces;
    Topology topology;
    std::vector<std::string> notes;  // what resolving decided that the user should hear (targets merged)
    std::map<std::size_t, ContainerInfo> containers;  // by namespace index: the --container targets'
};

// Resolves targets, discovers the path, applies --point. Throws Fatal / UsageError with one clear line.
Resolved resolve_targets(const TargetOptions& options, bool require_target);

// The namespace label to show for a point ("" for the host namespace when it is hoptrace's own).
std::string netns_label(const Resolved& r, std::size_t index);

}  // namespace hoptrace::cli
