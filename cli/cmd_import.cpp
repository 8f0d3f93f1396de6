// hoptrace import --db FILE [NAME=]FILE.pcap[ng]…
// Reads each capture file into the store, one point per file (per interface for multi-interface pcapng and
// for Linux cooked v2 `tcpdump -i any` captures), then correlates unless told not to.

#include "cli/command.hpp"
#include "correlate/correlate.hpp"
#include "store/writer.hpp"
#include "tracer/capture_file.hpp"
#include "tracer/dissect.hpp"
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

class Progress {
public:
    explicit Progress(bool quiet) : m_enabled(!quiet && isatty(STDERR_FILENO) == 1) {}
    void update(const std::string& file, std::uint64_t frames) {
        if (!m_enabled || (frames & 0x3FFF) != 0) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - m_last < std::chrono::milliseconds(250)) return;
        m_last = now;
        std::fprintf(stderr, "\r  %s: %llu packets", file.c_str(), static_cast<unsigned long long>(frames));
        m_dirty = true;
    }
    void clear() {
        if (m_dirty) std::fputs("\r\033[K", stderr);
        m_dirty = false;
    }

private:
    bool m_enabled;
    bool m_dirty = false;
    std::chrono::steady_clock::time_point m_last{};
};

// Imports one file. Frames read before an error stay in the store; the error comes back as one line.
std::optional<std::string> import_file(store::Database& db, store::Writer& writer, const FileSpec& spec,
                                       Progress& progress, bool quiet) {
    auto opened = CaptureFile::open(spec.path);
    if (!opened) return opened.error();
    CaptureFile& file = **opened;

    std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> point_of;  // (interface, ifindex) -> id
    std::vector<std::string> created;
    auto point_for = [&](std::uint32_t interface, std::uint32_t ifindex) -> std::uint32_t {
        const auto key = std::pair{interface, ifindex};
        if (auto it = point_of.find(key); it != point_of.end()) return it->second;
        const FileInterface& iface = file.interfaces().at(interface);
        store::Point p;
        p.name = spec.name;
        if (iface.link_type == LinkType::linux_sll2) {
            p.name += "/if" + std::to_string(ifindex);  // `tcpdump -i any -y LINUX_SLL2`: one point per interface
            p.ifindex = ifindex;
        } else if (file.interfaces().size() > 1) {
            p.name += "/" + (iface.name.empty() ? "if" + std::to_string(interface) : iface.name);
        }
        p.ifname = iface.name;
        p.link_type = static_cast<std::uint32_t>(iface.link_type);
        p.source = spec.path;
        if (db.find_point(p.name)) {
            throw Fatal(spec.path + ": a point named '" + p.name + "' is already in " + db.path() +
                        "; name this file's point with NAME=" + spec.path);
        }
        const auto id = static_cast<std::uint32_t>(db.add_point(p));
        created.push_back(p.name);
        point_of.emplace(key, id);
        return id;
    };

    std::optional<std::string> error;
    FileFrame ff;
    std::uint64_t frames = 0;
    try {
        for (;;) {
            auto more = file.next(ff);
            if (!more) {
                error = more.error();
                break;
            }
            if (!*more) break;
            PacketRecord record = dissect(ff.frame);
            record.point_id = point_for(ff.interface, record.ifindex);
            writer.add(record, ff.frame.bytes);
            progress.update(spec.path, ++frames);
        }
        if (created.empty() && !file.interfaces().empty()) point_for(0, 0);  // an empty capture is still a point
    } catch (const Fatal& e) {
        error = e.what();
    }
    progress.clear();
    if (!quiet) {
        std::string names;
        for (const auto& n : created) names += (names.empty() ? "" : ", ") + n;
        std::fprintf(stderr, "imported %s: %llu packets -> %s\n", spec.path.c_str(),
                     static_cast<unsigned long long>(frames), names.empty() ? "no point" : names.c_str());
    }
    return error;
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
    double max_gap_ms = 100;
    po::options_description options("options");
    options.add_options()
        ("db", po::value(&db_path)->required(), "database file (created if missing; points are added to it)")
        ("no-correlate", po::bool_switch(&no_correlate), "only import; run 'hoptrace correlate' later")
        ("max-hop-gap-ms", po::value(&max_gap_ms)->default_value(100),
         "correlate: the longest time one hop may take (ms)")
        ("quiet,q", po::bool_switch(&quiet), "no progress or per-file lines on stderr")
        ("file", po::value(&files), "[NAME=]FILE.pcap[ng]: capture files, each becomes a point named NAME "
                                    "(default: the file name without extension)");
    po::positional_options_description positional;
    positional.add("file", -1);
    po::variables_map vm;
    if (!parse(inv, "--db FILE [NAME=]FILE.pcap[ng]…", options, &positional, vm)) return k_exit_ok;
    if (files.empty()) throw UsageError("no capture file given");
    if (max_gap_ms <= 0) throw UsageError("--max-hop-gap-ms must be positive");
    std::vector<FileSpec> specs;
    for (const auto& f : files) specs.push_back(parse_spec(f));

    store::Database db = store::Database::open(db_path);
    if (!db.meta("created_by")) db.set_meta("created_by", std::string("hoptrace ") + k_version);
    db.set_meta("hoptrace_version", k_version);
    db.set_meta("host", host_name());
    db.set_meta("last_import", inv.command_line);

    bool failed = false;
    Progress progress(quiet);
    {
        store::Writer writer(db);
        for (const FileSpec& spec : specs) {
            if (auto error = import_file(db, writer, spec, progress, quiet)) {
                std::cerr << "hoptrace import: " << *error << "\n";
                failed = true;
            }
        }
        writer.close();  // everything read is committed, even after an error in a later file
    }
    db.build_indexes();
    if (!no_correlate) {
        correlate::MatchOptions match;
        match.max_hop_gap_ns = static_cast<std::int64_t>(max_gap_ms * 1e6);
        const auto s = correlate::run(db, match);
        if (!quiet) {
            std::fprintf(stderr, "correlated %llu sightings into %llu journeys, %llu flows\n",
                         static_cast<unsigned long long>(s.sightings), static_cast<unsigned long long>(s.journeys),
                         static_cast<unsigned long long>(s.flows));
        }
    }
    return failed ? k_exit_runtime : k_exit_ok;
}

}  // namespace hoptrace::cli
