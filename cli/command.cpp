#include "cli/command.hpp"

#include "cli/status_line.hpp"
#include "store/private_file.hpp"
#include "store/spool.hpp"
#include "store/writer.hpp"

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

store::Database open_existing(const std::string& path) {
    require_exists(path);
    return store::Database::open(path);
}

std::map<std::string, std::string> parse_roles(const std::vector<std::string>& specs) {
    std::map<std::string, std::string> roles;
    for (const std::string& spec : specs) {
        const auto eq = spec.rfind('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
            throw UsageError("--role '" + spec + "': use NAME=ROLE, ROLE one of container, veth, bridge, uplink, other");
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

store::Database open_to_write(const std::string& path, bool* created) {
    const auto made = store::create_private_file(path);
    if (!made) throw Fatal(made.error());
    if (created != nullptr) *created = *made;
    try {
        return store::Database::open(path);
    } catch (...) {
        if (*made) ::unlink(path.c_str());  // the empty file this call made, nothing else
        throw;
    }
}

std::uint64_t store_spooled(store::Database& db, bool quiet) {
    const auto spooled = store::spool_size(db);
    if (!spooled.pending && spooled.legacy_frames == 0) return 0;
    if (!quiet && spooled.pending) {
        std::fprintf(stderr, "hoptrace: %s holds %llu packets of a capture that did not finish storing them; storing "
                     "them now\n", db.path().c_str(), static_cast<unsigned long long>(spooled.frames));
    }
    StatusLine status(quiet);
    store::Writer writer(db);
    const auto stored = store::ingest_spool(db, writer, [&](std::uint64_t frames) {
        status.update([&] {
            return "storing " + std::to_string(frames) + " of " + std::to_string(spooled.frames) + " packets…";
        });
        return true;
    });
    status.clear();
    writer.close();
    if (!stored.torn.empty()) std::fprintf(stderr, "hoptrace: %s\n", stored.torn.c_str());
    return stored.frames;
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

}  // namespace hoptrace::cli
