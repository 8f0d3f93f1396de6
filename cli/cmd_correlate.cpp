// hoptrace correlate --db FILE: (re)builds journeys, flows, rewrites, hop statistics and losses.

#include "cli/command.hpp"
#include "cli/numeric_option.hpp"
#include "correlate/correlate.hpp"
#include "report/format.hpp"

#include <cstdio>

namespace hoptrace::cli {

int cmd_correlate(const Invocation& inv) {
    std::string db_path;
    double max_gap_ms = 100;
    std::vector<std::string> role_specs;
    po::options_description options("options");
    // clang-format off
    options.add_options()
        ("db", po::value(&db_path)->required(), "database written by 'hoptrace import' or 'hoptrace capture'")
        ("max-hop-gap-ms", po::value(&max_gap_ms)->default_value(100),
         "the longest time one hop may take (ms); sightings further apart are not one journey")
        ("role", po::value(&role_specs)->composing(),
         "NAME=ROLE: the role of point NAME (container, veth, bridge, uplink, other), replacing the inferred one; "
         "repeat for several points");
    // clang-format on
    po::variables_map vm;
    if (!parse(inv, "--db FILE", options, nullptr, vm)) return k_exit_ok;
    check_max_hop_gap(vm);
    auto [lock, db] = open_existing(db_path);
    store_spooled(db, false);
    warn_incomplete_points(db);
    apply_given_roles(db, parse_roles(role_specs));
    correlate::MatchOptions match;
    match.max_hop_gap_ns = static_cast<std::int64_t>(max_gap_ms * 1e6);
    const auto s = correlate::run(db, match);
    print_inferred_roles(s);
    using report::counted;
    const auto n = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
    std::printf("%s, %s, %s, %s, %s, %s\n", counted(n(s.sightings), "sighting", "sightings").c_str(),
                counted(n(s.journeys), "journey", "journeys").c_str(), counted(n(s.flows), "flow", "flows").c_str(),
                counted(n(s.rewrites), "rewrite", "rewrites").c_str(), counted(n(s.losses), "loss", "losses").c_str(),
                counted(n(s.ambiguous), "ambiguous journey", "ambiguous journeys").c_str());
    return k_exit_ok;
}

}  // namespace hoptrace::cli
