// hoptrace import --db FILE [NAME=]FILE.pcap[ng]…
// Reads each capture file into the store, one point per file (per interface for multi-interface pcapng and
// for Linux cooked v2 `tcpdump -i any` captures), then correlates unless told not to.

#include "cli/command.hpp"
#include "cli/numeric_option.hpp"
#include "cli/status_line.hpp"
#include "cli/targets.hpp"
#include "correlate/correlate.hpp"
#include "report/format.hpp"
#include "store/import.hpp"
#include "tracer/capture_file.hpp"
#include "tracer/topology.hpp"
#include "version.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

namespace hoptrace::cli {
namespace {

struct FileSpec {
    std::string name;  // point name (prefix for several interfaces)
    std::string path;
};

FileSpec parse_spec(const std::string& spec) {
    // NAME=FILE names the point; a bare FILE is named after its stem. A '=' after a '/' belongs to the path.
    const auto eq = spec.find('=');
    const auto slash = spec.find('/');
    if (eq != std::string::npos && eq > 0 && (slash == std::string::npos || eq < slash)) {
        if (eq + 1 == spec.size()) throw UsageError("'" + spec + "' names a point but no file; use NAME=FILE");
        return {spec.substr(0, eq), spec.substr(eq + 1)};
    }
    return {std::filesystem::path(spec).stem().string(), spec};
}

std::string host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return "";
    return buf;
}

}  // namespace

int cmd_import(const Invocation& inv) {
    std::string db_path;
    std::vector<std::string> files;
    bool no_correlate = false;
    bool quiet = false;
    bool replace = false;
    double max_gap_ms = 100;
    std::string link_names_ns;
    std::vector<std::string> role_specs;
    po::options_description options("options");
    // clang-format off
    options.add_options()
        ("db", po::value(&db_path)->required(), "database file (created if missing; points are added to it)")
        ("no-correlate", po::bool_switch(&no_correlate), "only import; run 'hoptrace correlate' later")
        ("max-hop-gap-ms", po::value(&max_gap_ms)->default_value(100),
         "correlate: the longest time one hop may take (ms)")
        ("link-names", po::value(&link_names_ns),
         "name the interfaces of Linux cooked v2 captures (tcpdump -i any -y LINUX_SLL2) after the interfaces "
         "of this 'ip netns' namespace, ':' for hoptrace's own (default: NAME/ifINDEX)")
        ("role", po::value(&role_specs)->composing(),
         "NAME=ROLE: the role of point NAME (container, veth, bridge, uplink, other); points without one get an "
         "inferred role, printed on stderr; repeat for several points")
        ("replace", po::bool_switch(&replace), "replace points of the same name already in the database (their packets "
                                               "too), e.g. one an interrupted import cut short")
        ("quiet,q", po::bool_switch(&quiet), "no progress or per-file lines on stderr")
        ("file", po::value(&files), "[NAME=]FILE.pcap[ng]: capture files, each becomes a point named NAME "
                                    "(default: the file name without extension)");
    // clang-format on
    po::positional_options_description positional;
    positional.add("file", -1);
    po::variables_map vm;
    if (!parse(inv, "--db FILE [NAME=]FILE.pcap[ng]…", options, &positional, vm)) return k_exit_ok;
    if (files.empty()) throw UsageError("no capture file given");
    check_max_hop_gap(vm);
    std::vector<FileSpec> specs;
    specs.reserve(files.size());
    for (const auto& f : files) specs.push_back(parse_spec(f));
    const auto roles = parse_roles(role_specs);
    std::map<std::uint32_t, std::string> link_names;
    if (!link_names_ns.empty()) {
        auto ns = link_names_ns == ":" ? Netns::self() : Netns::by_name(link_names_ns);
        if (!ns) throw Fatal("--link-names: " + ns.error());
        auto links = list_links(*ns);
        if (!links) throw Fatal("--link-names " + link_names_ns + ": " + links.error());
        for (const auto& l : *links) link_names[l.ifindex] = l.ifname;
    }

    auto [lock, db] = open_to_write(db_path);
    if (!db.meta("created_by")) db.set_meta("created_by", std::string("hoptrace ") + k_version);
    db.set_meta("hoptrace_version", k_version);
    db.set_meta("host", host_name());
    db.set_meta("last_import", inv.command_line);

    bool failed = false;
    bool added = false;
    StatusLine progress(quiet);
    {
        store::Writer writer(db);
        for (const FileSpec& spec : specs) {
            if (replace && CaptureFile::open(spec.path)) {  // a file that does not open replaces nothing
                for (const auto& name : store::remove_points(db, spec.name))
                    if (!quiet) std::fprintf(stderr, "replacing point %s\n", name.c_str());
            }
            const auto result =
                store::import_file(db, writer, {spec.name, spec.path, link_names}, [&](std::uint64_t n) {
                    progress.update([&] { return spec.path + ": " + std::to_string(n) + " packets"; });
                });
            progress.clear();
            if (!quiet && (!result.error || result.frames > 0)) {  // what a failed file kept, if anything
                std::string names;
                for (const auto& n : result.points) names += (names.empty() ? "" : ", ") + n;
                std::fprintf(stderr, "imported %s: %llu packets -> %s\n", spec.path.c_str(),
                             static_cast<unsigned long long>(result.frames),
                             names.empty() ? "no point" : names.c_str());
            }
            added = added || !result.points.empty();
            if (result.error) {
                std::cerr << "hoptrace import: " << *result.error << "\n";
                failed = true;
            }
        }
        writer.close();  // everything read is committed, even after an error in a later file
    }
    store_spooled(db, quiet);  // an interrupted capture in the same file: its packets count too
    // New points make the last correlation stale: without --no-correlate it runs again below.
    if (added && no_correlate) db.remove_meta("correlated_ns");
    apply_given_roles(db, roles);
    db.build_indexes();
    if (!no_correlate) {
        correlate::MatchOptions match;
        match.max_hop_gap_ns = static_cast<std::int64_t>(max_gap_ms * 1e6);
        const auto s = correlate::run(db, match);
        if (!quiet) print_inferred_roles(s);
        if (!quiet) {
            using report::counted;
            const auto n = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
            std::string line = "correlated " + counted(n(s.sightings), "sighting", "sightings") + " into " +
                               counted(n(s.journeys), "journey", "journeys") + ", " +
                               counted(n(s.flows), "flow", "flows");
            if (s.ambiguous != 0) line += ", " + counted(n(s.ambiguous), "journey", "journeys") + " ambiguous";
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    return failed ? k_exit_runtime : k_exit_ok;
}

}  // namespace hoptrace::cli
