// hoptrace capture --db FILE TARGET [options] [-- CMD ARGS…]
// hoptrace trace   TARGET [options] [-- CMD ARGS…]     (capture + correlate + text report)
//
// Discovers the path, opens one libpcap handle per point inside its namespace, spools every frame (chunks of
// raw frames appended to FILE-spool beside the database by the spool's own thread), and stops on SIGINT/SIGTERM,
// --duration, --count, or when CMD exits (after a grace period for the replies). Then it turns the spool into
// `packets` rows ("storing N packets") and correlates. A second SIGINT stops at once; what was captured is
// still kept (as packets, or still spooled for `hoptrace correlate` to store).

#include "capture/session.hpp"
#include "cli/command.hpp"
#include "cli/numeric_option.hpp"
#include "cli/status_line.hpp"
#include "cli/targets.hpp"
#include "correlate/correlate.hpp"
#include "report/model.hpp"
#include "report/text.hpp"
#include "tracer/errno_text.hpp"
#include "tracer/privileges.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

namespace hoptrace::cli {
namespace {

std::atomic<int> g_signals{0};

extern "C" void on_stop_signal(int) { g_signals.fetch_add(1); }

class SignalGuard {
public:
    SignalGuard() {
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &m_old_int);
        sigaction(SIGTERM, &sa, &m_old_term);
    }
    SignalGuard(const SignalGuard&) = delete;
    SignalGuard& operator=(const SignalGuard&) = delete;
    ~SignalGuard() {
        sigaction(SIGINT, &m_old_int, nullptr);
        sigaction(SIGTERM, &m_old_term, nullptr);
    }

private:
    struct sigaction m_old_int {};
    struct sigaction m_old_term {};
};

// The command must exist before anything is captured: a typo is a usage problem, not an empty capture.
// Why `program` cannot be run by this process (searched in $PATH as execvp does), or nullopt when it can.
std::optional<std::string> why_not_runnable(const std::string& program) {
    auto runnable = [](const std::string& path) { return ::access(path.c_str(), X_OK) == 0; };
    if (program.find('/') != std::string::npos) {
        if (runnable(program)) return std::nullopt;
        return errno_text(errno);
    }
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
        const auto end = std::min(dirs.find(':', start), dirs.size());
        const std::string dir = dirs.substr(start, end - start);
        if (!dir.empty() && runnable(dir + "/" + program)) return std::nullopt;
        start = end + 1;
    }
    return std::string("command not found");
}

// Before anything is captured: CMD must be runnable by the user it will run as (`who`, in a child that becomes it,
// as spawn does), not only by root.
void check_runnable(const std::string& program, const std::optional<RunAs>& who) {
    std::optional<std::string> why;
    if (!who) {
        why = why_not_runnable(program);
    } else {
        int fds[2] = {-1, -1};
        if (::pipe2(fds, O_CLOEXEC) != 0) throw Fatal(std::string("cannot check the command: ") + errno_text(errno));
        const pid_t child = ::fork();
        if (child < 0) {
            const int error = errno;
            ::close(fds[0]);
            ::close(fds[1]);
            throw Fatal(std::string("cannot check the command: ") + errno_text(error));
        }
        if (child == 0) {
            ::close(fds[0]);
            const int error = become(*who);
            const std::string said = error != 0 ? "cannot become " + who->name + ": " + errno_text(error)
                                                : why_not_runnable(program).value_or("");
            const bool whole = ::write(fds[1], said.data(), said.size()) == static_cast<ssize_t>(said.size());
            ::_exit(whole ? 0 : 1);
        }
        ::close(fds[1]);
        std::string said;
        char buf[256];
        for (;;) {
            const ssize_t n = ::read(fds[0], buf, sizeof buf);
            if (n > 0) said.append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || errno != EINTR) break;
        }
        ::close(fds[0]);
        int status = 0;
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        // A child that did not say its answer whole cannot vouch for CMD.
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            throw Fatal("cannot check whether '" + program + "' can run as " + who->name + "; nothing was captured");
        if (!said.empty()) why = said + " (as " + who->name + ")";
    }
    if (why) throw Fatal("'" + program + "': " + *why + "; nothing was captured");
}

// The command runs as `who` when given (the user who ran sudo, or --user), never with hoptrace's capabilities then.
pid_t spawn(const std::vector<std::string>& argv, const std::optional<RunAs>& who) {
    const pid_t child = ::fork();
    if (child < 0) throw Fatal(std::string("cannot start '") + argv[0] + "': " + errno_text(errno));
    if (child == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        // Nothing of hoptrace's reaches CMD: libpcap's packet sockets (every point's, in every namespace) are not
        // close-on-exec, and with them CMD could read, steal or send frames without any capability.
        ::close_range(3, ~0U, 0);
        if (who) {
            if (const int error = become(*who); error != 0) {
                std::fprintf(stderr, "hoptrace: cannot run '%s' as %s: %s\n", argv[0].c_str(), who->name.c_str(),
                             errno_text(error).c_str());
                ::_exit(126);
            }
        }
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "hoptrace: cannot run '%s': %s\n", args[0], errno_text(errno).c_str());
        ::_exit(127);
    }
    return child;
}

struct CaptureArgs {
    std::string db_path;
    TargetOptions targets;
    std::string filter;
    int snaplen = 262144;
    int buffer_mb = 64;
    double duration_s = 0;
    std::int64_t count = 0;  // signed, so that "--count -1" is refused as -1 (and not as 2^64 - 1)
    double grace_s = 1.0;
    bool quiet = false;
    bool no_correlate = false;
    bool trace_rules = false;
    std::string user;
    std::vector<std::string> command;
};

std::vector<capture::SessionPoint> session_points(const Resolved& r) {
    std::vector<capture::SessionPoint> points;
    for (const auto& p : r.topology.points) {
        capture::SessionPoint sp;
        sp.point.name = p.name;
        sp.point.netns = netns_label(r, p.netns);
        sp.point.ifname = p.link.ifname;
        sp.point.role = to_string(p.role);
        sp.point.role_evidence = "live topology";
        for (const auto& address : p.link.addresses)
            sp.point.addresses += (sp.point.addresses.empty() ? "" : " ") + address;
        sp.point.ifindex = p.link.ifindex;
        sp.ns = r.namespaces[p.netns].get();
        if (const auto c = r.containers.find(p.netns); c != r.containers.end() && p.role == Role::container)
            sp.container = c->second;
        points.push_back(std::move(sp));
    }
    return points;
}

// --trace-rules traces the packets of the containers' networks: their eth0 and bridge addresses with their
// prefixes (link-local ones left out).
std::vector<TracedNetwork> traced_networks(const Resolved& r) {
    std::vector<TracedNetwork> out;
    for (const auto& p : r.topology.points) {
        if (p.role != Role::container && p.role != Role::bridge) continue;
        for (const auto& text : p.link.addresses) {
            const auto slash = text.find('/');
            const auto address = IpAddr::parse(text.substr(0, slash));
            if (!address || slash == std::string::npos) continue;
            const int prefix = std::stoi(text.substr(slash + 1));
            if (address->family == 6 && address->bytes[0] == 0xfe && (address->bytes[1] & 0xc0) == 0x80) continue;
            auto masked = [prefix](IpAddr a) {  // the network's own address: one rule per network
                for (std::size_t i = 0; i < a.bytes.size(); ++i) {
                    const int bits = std::clamp(prefix - static_cast<int>(8 * i), 0, 8);
                    a.bytes[i] = static_cast<std::uint8_t>(a.bytes[i] & (bits == 0 ? 0 : 0xff << (8 - bits)));
                }
                return a;
            };
            const bool known = std::any_of(out.begin(), out.end(), [&](const TracedNetwork& n) {
                return n.prefix == prefix && masked(n.address) == masked(*address);
            });
            if (!known) out.push_back({*address, prefix});
        }
    }
    return out;
}

// --trace-rules also traces the first packet of a connection to a published port (before its DNAT names the
// container): the ports of the DNAT rules the topology found (`--dport N`) and of the containers' published ports.
std::vector<std::uint16_t> published_ports(const Resolved& r) {
    std::set<std::uint16_t> ports;
    auto add = [&](const std::string& text) {
        unsigned v = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && v > 0 && v <= 65535) ports.insert(static_cast<std::uint16_t>(v));
    };
    for (const auto& rule : r.topology.nat) {
        if (rule.kind != "DNAT") continue;
        const auto at = rule.rule.find("--dport ");
        if (at == std::string::npos) continue;
        const auto start = at + 8;
        add(rule.rule.substr(start, rule.rule.find(' ', start) - start));
    }
    for (const auto& [ns, c] : r.containers)
        for (const std::string& port : c.ports) {  // HOSTIP:HOSTPORT->PORT/PROTO
            const auto arrow = port.find("->");
            const auto colon = port.rfind(':', arrow);
            if (arrow != std::string::npos && colon != std::string::npos)
                add(port.substr(colon + 1, arrow - colon - 1));
        }
    return {ports.begin(), ports.end()};
}

// Waits for a stop: a signal, --duration, --count, every point ended, the disk filled, or CMD done (+ grace).
std::string wait_for_stop(const CaptureArgs& a, capture::Session& session, pid_t child, int& child_status) {
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    std::optional<double> child_done_at;
    const LiveCapture& capture = session.capture();
    StatusLine status(a.quiet, std::chrono::milliseconds(500));
    std::string stop_reason;
    while (stop_reason.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const double t = elapsed();
        if (g_signals.load() > 0) stop_reason = "signal";
        else if (a.duration_s > 0 && t >= a.duration_s) stop_reason = "duration";
        else if (a.count > 0 && capture.total_packets() >= static_cast<std::uint64_t>(a.count)) stop_reason = "count";
        else if (auto itself = session.stopped_by_itself()) stop_reason = *itself;
        if (child > 0 && !child_done_at) {
            if (::waitpid(child, &child_status, WNOHANG) == child) child_done_at = t;
        }
        if (child_done_at && t - *child_done_at >= a.grace_s) stop_reason = "command finished";
        status.update([&] {
            const auto stats = capture.stats();
            std::string line = std::to_string(static_cast<int>(t)) + "s ";
            for (std::size_t i = 0; i < stats.size(); ++i) {
                line += " " + capture.points()[i].name + " " + std::to_string(stats[i].packets);
                if (stats[i].ended) line += " (ended)";
            }
            return line;
        });
    }
    status.clear();
    if (child > 0 && !child_done_at) {
        // A command that ignores SIGTERM does not keep the capture going: two seconds, then SIGKILL.
        ::kill(child, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (::waitpid(child, &child_status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() >= deadline) {
                ::kill(child, SIGKILL);
                ::waitpid(child, &child_status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    return stop_reason;
}

// `captured` turns true once packets may be in the database (from then on it is never thrown away).
int run_capture(const Invocation& inv, const CaptureArgs& a, bool trace, bool& captured) {
    if (::geteuid() != 0) throw Fatal("capturing needs root (network namespaces, packet sockets); run it with sudo");
    const auto who = command_user(a.user);
    if (!who) throw UsageError(who.error());
    if (!a.command.empty()) check_runnable(a.command[0], *who);
    Resolved r = resolve_targets(a.targets, true);
    for (const auto& note : r.notes)
        if (!a.quiet) std::fprintf(stderr, "hoptrace: note: %s\n", note.c_str());

    capture::SessionOptions options;
    options.live.filter = a.filter;
    options.live.snaplen = a.snaplen;
    options.live.buffer_bytes = a.buffer_mb << 20;
    options.live.count = static_cast<std::uint64_t>(a.count);
    options.live.drop_capabilities = true;
    options.command_line = inv.command_line;
    options.masquerade = r.topology.masquerade;
    if (a.trace_rules) {
        options.trace_rules = traced_networks(r);
        options.trace_ports = published_ports(r);
        if (options.trace_rules->empty())
            throw Fatal("--trace-rules: the targets have no IP address to trace the firewall's verdicts for");
    }
    capture::Session session(a.db_path, session_points(r), *r.namespaces[0], options);
    auto print_notes = [&, printed = std::size_t{0}]() mutable {
        for (; printed < session.notes().size(); ++printed)
            if (!a.quiet) std::fprintf(stderr, "hoptrace: note: %s\n", session.notes()[printed].c_str());
    };
    print_notes();

    std::optional<SignalGuard> signals;  // only while capturing: Ctrl-C during correlation just stops it
    signals.emplace();
    g_signals = 0;
    if (auto started = session.start(); !started) throw Fatal(started.error());
    captured = true;
    if (!a.quiet) {
        std::string names;
        for (const auto& p : session.capture().points()) names += (names.empty() ? "" : ", ") + p.name;
        std::fprintf(stderr, "capturing on %s\n", names.c_str());
    }
    const pid_t child = a.command.empty() ? -1 : spawn(a.command, *who);
    // From here the main thread only dumps conntrack, signals the command (another user's process) and works on
    // files; the points' threads already hold nothing (tracer/privileges.hpp).
    if (auto kept = keep_only({Capability::net_admin, Capability::kill, Capability::dac_override}); !kept)
        std::fprintf(stderr, "hoptrace: note: %s (the capture keeps running with them)\n", kept.error().c_str());
    int child_status = 0;
    std::string stop_reason;
    try {
        stop_reason = session.stop(wait_for_stop(a, session, child, child_status));
    } catch (const store::Error& e) {
        throw Fatal(store_failure(session.db(), e));
    }
    print_notes();
    // Stored, dissected, correlated and reported with no capability but the one that reaches the files.
    if (auto kept = keep_only({Capability::dac_override}); !kept)
        std::fprintf(stderr, "hoptrace: note: %s\n", kept.error().c_str());

    // The spool becomes packets rows: dissect + one row per sighting, now that the traffic is no longer competing.
    // A second Ctrl-C stops after the current chunk; the rest stays spooled for `hoptrace correlate`.
    const std::uint64_t captured_total = session.capture().total_packets();
    if (stop_reason == capture::k_stop_disk_full)
        std::fprintf(stderr,
                     "hoptrace: the disk is full: capturing stopped (what was captured until then is kept, "
                     "with room left to store and correlate it)\n");
    StatusLine storing(a.quiet, std::chrono::milliseconds(250));
    store::SpoolIngest ingested;
    try {
        ingested = session.store([&](std::uint64_t frames) {
            storing.update([&] {
                return "storing " + std::to_string(frames) + " of " + std::to_string(captured_total) + " packets…";
            });
            return g_signals.load() < 2;
        });
    } catch (const store::Error& e) {
        storing.clear();
        throw Fatal(store_failure(session.db(), e));
    }
    storing.clear();
    if (!ingested.torn.empty()) std::fprintf(stderr, "hoptrace: %s\n", ingested.torn.c_str());
    if (ingested.stopped && !a.quiet) {
        const auto left = store::spool_size(session.db());
        std::fprintf(stderr, "hoptrace: %llu packets are still spooled (%s)\n",
                     static_cast<unsigned long long>(left.frames), left.path.c_str());
    }
    if (!a.quiet) {
        for (const auto& p : session.results())
            std::fprintf(stderr, "  %-20s %8llu packets, %llu dropped by the kernel%s%s\n", p.name.c_str(),
                         static_cast<unsigned long long>(p.packets), static_cast<unsigned long long>(p.kernel_drops),
                         p.note.empty() ? "" : "; ", p.note.c_str());
    }
    if (child > 0 && !a.quiet) {
        if (WIFEXITED(child_status) && WEXITSTATUS(child_status) != 0)
            std::fprintf(stderr, "hoptrace: note: '%s' exited with status %d\n", a.command[0].c_str(),
                         WEXITSTATUS(child_status));
    }

    if (g_signals.load() > 1) {  // a second Ctrl-C: stop now, the capture is safe in the database
        std::fprintf(stderr, "hoptrace: interrupted; run 'hoptrace correlate --db %s' later\n", a.db_path.c_str());
        return k_exit_runtime;
    }
    if (a.no_correlate && !trace) return k_exit_ok;
    signals.reset();  // the capture is safe on disk: from here Ctrl-C simply ends hoptrace
    try {
        correlate::run(session.db());
    } catch (const store::Error& e) {
        throw Fatal(store_failure(session.db(), e));
    }
    if (trace) std::cout << report::render_text(report::load_report(session.db()));
    return k_exit_ok;
}

}  // namespace

int capture_command(const Invocation& inv, bool trace) {
    // Everything after "--" is the command to run while capturing.
    Invocation own = inv;
    CaptureArgs a;
    for (std::size_t i = 0; i < inv.args.size(); ++i) {
        if (inv.args[i] == "--") {
            own.args.assign(inv.args.begin(), inv.args.begin() + static_cast<std::ptrdiff_t>(i));
            a.command.assign(inv.args.begin() + static_cast<std::ptrdiff_t>(i) + 1, inv.args.end());
            break;
        }
    }
    po::options_description options("options");
    if (trace) {
        options.add_options()("db", po::value(&a.db_path),
                              "keep the capture in this database (default: a temporary file)");
    } else {
        options.add_options()("db", po::value(&a.db_path)->required(), "new database file to store the capture in");
    }
    a.targets.add_to(options);
    // clang-format off
    options.add_options()
        ("filter", po::value(&a.filter), "BPF filter (tcpdump syntax) applied at every point")
        ("snaplen", po::value(&a.snaplen)->default_value(262144), "bytes kept of each packet")
        ("buffer-mb", po::value(&a.buffer_mb)->default_value(64), "kernel capture buffer per point (MiB)")
        ("duration", po::value(&a.duration_s), "stop after this many seconds")
        ("count", po::value(&a.count), "stop once this many packets were captured (all points together)")
        ("grace", po::value(&a.grace_s)->default_value(1.0), "seconds to keep capturing after CMD exits (replies)")
        ("user", po::value(&a.user), "run CMD as this user (name or uid; default: the user who ran sudo, else as "
                                     "hoptrace runs)")
        ("trace-rules", po::bool_switch(&a.trace_rules), "trace the firewall's verdicts (nftables tracing in the host "
                                                         "namespace): which rule dropped or translated each packet")
        ("quiet,q", po::bool_switch(&a.quiet), "no status line or summary on stderr");
    // clang-format on
    if (!trace) options.add_options()("no-correlate", po::bool_switch(&a.no_correlate), "only capture");
    po::variables_map vm;
    const std::string synopsis = std::string(trace ? "" : "--db FILE ") +
                                 "(--netns NAME | --pid PID | --container NAME)… [options] [-- CMD ARGS…]";
    if (!parse(own, synopsis, options, nullptr, vm)) return k_exit_ok;
    check_range(vm, "snaplen", 1, 262144, "bytes");
    check_range(vm, "buffer-mb", 1, 2047, "MiB");  // buffer_bytes is an int
    check_range(vm, "duration", 0.001, 366.0 * 86400, "seconds");
    check_range(vm, "count", std::int64_t{1}, std::int64_t{1'000'000'000'000}, "packets");
    check_range(vm, "grace", 0.0, 3600.0, "seconds");
    std::filesystem::path temp;
    if (trace && a.db_path.empty()) {
        // In a directory of its own (mkdtemp: a new name, mode 0700), where nobody else can plant a file or a link.
        std::string dir = (std::filesystem::temp_directory_path() / "hoptrace-trace-XXXXXX").string();
        if (::mkdtemp(dir.data()) == nullptr) {
            const int error = errno;
            throw Fatal(dir + ": cannot create a temporary directory: " + errno_text(error));
        }
        temp = std::filesystem::path(dir) / "trace.db";
        a.db_path = temp.string();
    }
    // A temporary database goes away once the report is printed; an interrupted trace keeps it.
    auto remove_temp = [&] {
        std::error_code ec;
        for (const char* suffix : {"", "-wal", "-shm", "-spool"}) std::filesystem::remove(temp.string() + suffix, ec);
        std::filesystem::remove(temp.parent_path(), ec);  // only if empty
    };
    int rc = k_exit_runtime;
    bool captured = false;
    try {
        rc = run_capture(inv, a, trace, captured);
    } catch (...) {
        if (!temp.empty() && !captured) remove_temp();
        if (!temp.empty() && captured)
            std::fprintf(stderr, "hoptrace: the capture is kept in %s\n", temp.string().c_str());
        throw;
    }
    if (!temp.empty() && rc == k_exit_ok) remove_temp();
    return rc;
}

int cmd_capture(const Invocation& inv) { return capture_command(inv, false); }
int cmd_trace(const Invocation& inv) { return capture_command(inv, true); }

}  // namespace hoptrace::cli
