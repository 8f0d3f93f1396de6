// hoptrace: where did my packet go, what rewrote it, and how long did each hop take?
// Thin entry point: finds the subcommand, runs it, and turns every failure into one line on stderr.

#include "cli/command.hpp"
#include "store/database.hpp"
#include "version.hpp"

#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <string_view>

namespace {

using hoptrace::cli::Invocation;

struct Command {
    int (*run)(const Invocation&);
    const char* summary;
};

const std::map<std::string, Command>& commands() {
    static const std::map<std::string, Command> table{
        {"topology", {hoptrace::cli::cmd_topology, "show the capture points of a container's path, and its NAT"}},
        {"capture", {hoptrace::cli::cmd_capture, "capture live on every point of the path into a database"}},
        {"trace", {hoptrace::cli::cmd_trace, "capture + correlate + text report in one go"}},
        {"export", {hoptrace::cli::cmd_export, "write the capture as pcapng for Wireshark, one interface per point"}},
        {"import", {hoptrace::cli::cmd_import, "read pcap/pcapng files into a database (one point per file)"}},
        {"correlate", {hoptrace::cli::cmd_correlate, "match packets across points: journeys, NAT, latency"}},
        {"report", {hoptrace::cli::cmd_report, "print the result: text (in words), JSON, CSV of hop samples, or HTML"}},
    };
    return table;
}

void usage(std::ostream& out) {
    out << "usage: hoptrace COMMAND [OPTIONS]\n\n"
           "Where did my packet go, what rewrote it, and how long did each hop take?\n\ncommands:\n";
    for (const auto& [name, cmd] : commands())
        out << "  " << name << std::string(12 - name.size(), ' ') << cmd.summary << "\n";
    out << "\n'hoptrace COMMAND --help' describes a command; 'hoptrace --version' prints the version.\n";
}

// `arg` as a POSIX shell would need it to get it back: as is when it holds only characters no shell treats
// specially, else in single quotes (a quote inside as '\''). The recorded command line (meta, pcapng comment,
// HTML header) can then be pasted to run again: `-- sh -c 'ping -c 3 x'` stays one argument.
std::string shell_quoted(std::string_view arg) {
    constexpr std::string_view plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-";
    if (!arg.empty() && arg.find_first_not_of(plain) == std::string_view::npos) return std::string(arg);
    std::string out = "'";
    for (const char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

}  // namespace

int main(int argc, char** argv) {
    std::ios::sync_with_stdio(false);
    if (argc < 2) {
        usage(std::cerr);
        return hoptrace::cli::k_exit_usage;
    }
    const std::string first = argv[1];
    if (first == "--help" || first == "-h" || first == "help") {
        usage(std::cout);
        return hoptrace::cli::k_exit_ok;
    }
    if (first == "--version" || first == "-V") {
        std::cout << "hoptrace " << hoptrace::k_version << "\n";
        return hoptrace::cli::k_exit_ok;
    }
    const auto it = commands().find(first);
    if (it == commands().end()) {
        std::cerr << "hoptrace: unknown command '" << first << "'; run 'hoptrace --help' for the list\n";
        return hoptrace::cli::k_exit_usage;
    }
    Invocation inv;
    inv.command = first;
    for (int i = 2; i < argc; ++i) inv.args.emplace_back(argv[i]);
    for (int i = 0; i < argc; ++i) {
        if (i > 0) inv.command_line += ' ';
        inv.command_line += shell_quoted(argv[i]);
    }
    try {
        return it->second.run(inv);
    } catch (const hoptrace::cli::UsageError& e) {
        std::cerr << "hoptrace " << first << ": " << e.what() << " (see 'hoptrace " << first << " --help')\n";
        return hoptrace::cli::k_exit_usage;
    } catch (const boost::program_options::error& e) {
        std::cerr << "hoptrace " << first << ": " << e.what() << " (see 'hoptrace " << first << " --help')\n";
        return hoptrace::cli::k_exit_usage;
    } catch (const std::exception& e) {  // Fatal, store::Error, and anything unexpected: one line, exit 1
        std::cerr << "hoptrace " << first << ": " << e.what() << "\n";
        return hoptrace::cli::k_exit_runtime;
    }
}
