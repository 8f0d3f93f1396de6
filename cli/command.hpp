#pragma once
// Subcommand wiring shared by cli/*.cpp. Each subcommand parses its own options (Boost.Program_options)
// and returns an exit code; failures are thrown as Fatal (exit 1) or UsageError (exit 2) and turned into
// one line on stderr by main().

#include "correlate/correlate.hpp"
#include "store/database.hpp"
#include "store/lock.hpp"

#include <boost/program_options.hpp>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace hoptrace::cli {

namespace po = boost::program_options;

inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_runtime = 1;
inline constexpr int k_exit_usage = 2;

// A runtime failure the user can act on; the message is the whole line (it names the input).
class Fatal : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Bad command line; main() adds "see 'hoptrace CMD --help'".
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Invocation {
    std::string command;            // "import", …
    std::vector<std::string> args;  // after the subcommand name
    std::string command_line;       // the whole command line, for the meta table
};

// Parses `args` against `options` (+ positionals); prints help and returns false on --help.
bool parse(const Invocation& inv, const std::string& synopsis, po::options_description& options,
           const po::positional_options_description* positional, po::variables_map& vm);

// A database opened to be written, with the writer lock that keeps other writers out (store/lock.hpp): `lock` is
// declared first, so it is released after the database is closed.
struct WritableDatabase {
    store::WriterLock lock;
    store::Database db;
};

// Opens an existing database to change it (correlate); Fatal naming the file when it does not exist or another
// hoptrace writes it.
WritableDatabase open_existing(const std::string& path);
// Opens an existing database read-only, for the commands that only read (report, export): never creates, upgrades
// or changes a file; Fatal naming it when it does not exist or is not a hoptrace database (an empty file included).
store::Database open_to_read(const std::string& path);
// Opens the database of a command that stores packets (import, capture), creating it mode 0600 when it does not
// exist (store/private_file.hpp); a dangling symbolic link is refused, and so is a database another hoptrace (a
// running capture) writes, before anything is written. `created` says whether this run created it.
WritableDatabase open_to_write(const std::string& path, bool* created = nullptr);

// A capture that was killed before it stored its spool leaves frames in its spool file (FILE-spool). The commands
// that write (correlate, import) store them as packets first, saying so on stderr unless quiet; returns how many.
std::uint64_t store_spooled(store::Database& db, bool quiet);
// The line for a store failure: for a full disk, what was kept, what still waits, and what to run once there is room.
std::string store_failure(const store::Database& db, const store::Error& error);
// The commands that only read (report, export): Fatal saying what to run while frames are still spooled.
void require_nothing_spooled(const store::Database& db, const std::string& path);

// Says on stderr which points an interrupted import cut short (points.complete = 0), and how to import them again.
// Returns how many.
std::size_t warn_incomplete_points(const store::Database& db);

// --role NAME=ROLE options (import, correlate): NAME -> ROLE; UsageError for a malformed one.
std::map<std::string, std::string> parse_roles(const std::vector<std::string>& specs);
// Sets them (correlate::set_roles), as a usage error naming the point or role when one is unknown.
void apply_given_roles(store::Database& db, const std::map<std::string, std::string>& roles);
// Prints the roles correlate inferred, with their evidence, on stderr (so a user can correct them with --role).
void print_inferred_roles(const correlate::Summary& summary);

int cmd_import(const Invocation& inv);
int cmd_correlate(const Invocation& inv);
int cmd_report(const Invocation& inv);
int cmd_topology(const Invocation& inv);
int cmd_capture(const Invocation& inv);
int cmd_trace(const Invocation& inv);
int cmd_export(const Invocation& inv);

}  // namespace hoptrace::cli
