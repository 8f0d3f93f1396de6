#include "cli/command.hpp"

#include "capture/session.hpp"
#include "cli/status_line.hpp"
#include "store/import.hpp"
#include "store/private_file.hpp"
#include "store/spool.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

namespace hoptrace::cli {

bool parse(const Invocation& inv, const std::string& synopsis, po::options_description& options,
           const po::positional_options_description* positional, po::variables_map& vm) {
    options.add_options()("help,h", "show this help");
    po::command_line_parser parser(inv.args);
    parser.options(options);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help") != 0U) {
        std::cout << "usage: hoptrace " << inv.command << " " << synopsis << "\n\n" << options << "\n";
        return false;
    }
    po::notify(vm);
    return true;
}

namespace {

void require_exists(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
        throw Fatal(path + ": no such database; create one with 'hoptrace import --db " + path + " FILE…'");
    }
}

}  // namespace

WritableDatabase open_existing(const std::string& path) {
    require_exists(path);
    WritableDatabase out;
    auto lock = store::WriterLock::acquire(path);
    if (!lock) throw Fatal(lock.error());
    out.lock = std::move(*lock);
    out.db = store::Database::open(path);
    return out;
}

std::map<std::string, std::string> parse_roles(const std::vector<std::string>& specs) {
    std::map<std::string, std::string> roles;
    for (const std::string& spec : specs) {
        const auto eq = spec.rfind('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
            throw UsageError("--role '" + spec +
                             "': use NAME=ROLE, ROLE one of container, veth, bridge, uplink, other");
        roles[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    return roles;
}

void apply_given_roles(store::Database& db, const std::map<std::string, std::string>& roles) {
    try {
        correlate::set_roles(db, roles);
    } catch (const store::Error& e) {
        throw UsageError(e.what());
    }
}

void print_inferred_roles(const correlate::Summary& summary) {
    for (std::size_t i = 0; i < summary.inferred.size(); ++i)
        std::fprintf(stderr, "role: %s = %s (%s); correct it with --role %s=ROLE\n", summary.inferred_names[i].c_str(),
                     summary.inferred[i].role.c_str(), summary.inferred[i].evidence.c_str(),
                     summary.inferred_names[i].c_str());
}

store::Database open_to_read(const std::string& path) {
    require_exists(path);
    return store::Database::open_read_only(path);
}

WritableDatabase open_to_write(const std::string& path, bool* created) {
    const auto made = store::create_private_file(path);
    if (!made) throw Fatal(made.error());
    if (created != nullptr) *created = *made;
    WritableDatabase out;
    auto lock = store::WriterLock::acquire(path);  // before anything is written: a running capture holds it
    if (!lock) throw Fatal(lock.error());          // (and a file this call made may be another writer's by now)
    out.lock = std::move(*lock);
    try {
        out.db = store::Database::open(path);
    } catch (...) {
        if (*made) ::unlink(path.c_str());  // the empty file this call made, nothing else
        throw;
    }
    return out;
}

std::uint64_t store_spooled(store::Database& db, bool quiet) {
    const auto spooled = store::spool_size(db);
    if (!spooled.pending && spooled.legacy_frames == 0) return 0;
    if (!quiet && spooled.pending) {
        std::fprintf(stderr,
                     "hoptrace: %s holds %llu packets of a capture that did not finish storing them; storing "
                     "them now\n",
                     db.path().c_str(), static_cast<unsigned long long>(spooled.frames));
    }
    StatusLine status(quiet);
    store::SpoolIngest stored;
    try {
        stored = capture::store_leftover_spool(db, [&](std::uint64_t frames) {
            status.update([&] {
                return "storing " + std::to_string(frames) + " of " + std::to_string(spooled.frames) + " packets…";
            });
            return true;
        });
    } catch (const store::Error& e) {
        status.clear();
        throw Fatal(store_failure(db, e));
    }
    status.clear();
    if (!stored.torn.empty()) std::fprintf(stderr, "hoptrace: %s\n", stored.torn.c_str());
    return stored.frames;
}

std::string store_failure(const store::Database& db, const store::Error& error) {
    if (!error.disk_full()) return error.what();
    std::string line = db.path() + ": the disk is full (" + error.what() + "); what was stored is kept";
    try {
        if (const auto left = store::spool_size(db); left.pending)
            line += ", " + std::to_string(left.frames) + " captured packets wait in " + left.path;
    } catch (const store::Error&) {  // NOLINT(bugprone-empty-catch): the disk-full line matters more
    }
    return line + ": free some space and run 'hoptrace correlate --db " + db.path() + "'";
}

void require_nothing_spooled(const store::Database& db, const std::string& path) {
    if (const auto spooled = store::spool_size(db); spooled.pending) {
        throw Fatal(path + ": " + std::to_string(spooled.frames) + " captured packets are still in the capture's " +
                    "spool (" + spooled.path + "), not yet stored as packets (the capture was interrupted); run " +
                    "'hoptrace correlate --db " + path + "' first");
    } else if (spooled.legacy_frames != 0) {
        throw Fatal(path + ": " + std::to_string(spooled.legacy_frames) + " captured packets are still in the " +
                    "capture_chunks table of a development build of hoptrace (7824020), which this build does not " +
                    "read; store them with that build ('hoptrace correlate --db " + path + "') first");
    }
}

std::size_t warn_incomplete_points(const store::Database& db) {
    std::size_t count = 0;
    for (const auto& p : db.points()) {
        if (p.complete) continue;
        ++count;
        std::fprintf(stderr,
                     "hoptrace: warning: point %s is incomplete: the import of %s was interrupted after %llu packets, "
                     "so journeys seem to end there; import it again with 'hoptrace import --replace --db %s %s=%s'\n",
                     p.name.c_str(), p.source.c_str(), static_cast<unsigned long long>(p.packets), db.path().c_str(),
                     store::import_name(p).c_str(), p.source.c_str());
    }
    return count;
}

}  // namespace hoptrace::cli
