// hoptrace capture --db FILE TARGET [options] [-- CMD ARGS…]
// hoptrace trace   TARGET [options] [-- CMD ARGS…]     (capture + correlate + text report)
//
// Discovers the path, opens one libpcap handle per point inside its namespace, spools every frame (chunks of
// raw frames appended to FILE-spool beside the database by the spool's own thread), and stops on SIGINT/SIGTERM,
// --duration, --count, or when CMD exits (after a grace period for the replies). Then it turns the spool into
// `packets` rows ("storing N packets") and correlates. A second SIGINT stops at once; what was captured is
// still kept (as packets, or still spooled for `hoptrace correlate` to store).

#include "cli/command.hpp"
#include "cli/numeric_option.hpp"
#include "cli/status_line.hpp"
#include "cli/targets.hpp"
#include "correlate/correlate.hpp"
#include "report/model.hpp"
#include "report/text.hpp"
#include "store/private_file.hpp"
#include "store/spool.hpp"
#include "store/writer.hpp"
#include "tracer/conntrack.hpp"
#include "tracer/live_capture.hpp"
#include "version.hpp"

#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
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

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The command must exist before anything is captured: a typo is a usage problem, not an empty capture.
void check_runnable(const std::string& program) {
    auto runnable = [](const std::string& path) { return ::access(path.c_str(), X_OK) == 0; };
    if (program.find('/') != std::string::npos) {
        if (!runnable(program)) throw Fatal("'" + program + "': " + std::strerror(errno) + "; nothing was captured");
        return;
    }
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
        const auto end = std::min(dirs.find(':', start), dirs.size());
        const std::string dir = dirs.substr(start, end - start);
        if (!dir.empty() && runnable(dir + "/" + program)) return;
        start = end + 1;
    }
    throw Fatal("'" + program + "': command not found; nothing was captured");
}

pid_t spawn(const std::vector<std::string>& argv) {
    const pid_t child = ::fork();
    if (child < 0) throw Fatal(std::string("cannot start '") + argv[0] + "': " + std::strerror(errno));
    if (child == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "hoptrace: cannot run '%s': %s\n", args[0], std::strerror(errno));
        ::_exit(127);
    }
    return child;
}

void store_conntrack(store::Database& db, const std::vector<ConntrackEntry>& entries, const char* event) {
    auto st = db.prepare(
        "INSERT INTO conntrack (ts_ns, event, proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, "
        "reply_dst, reply_sport, reply_dport) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    const std::int64_t ts = now_ns();
    store::Transaction txn(db);
    for (const auto& e : entries) {
        st.bind(1, ts).bind(2, event).bind(3, std::int64_t{e.proto});
        st.bind(4, e.orig_src).bind(5, e.orig_dst).bind(6, std::int64_t{e.orig_sport}).bind(7, std::int64_t{e.orig_dport});
        st.bind(8, e.reply_src).bind(9, e.reply_dst).bind(10, std::int64_t{e.reply_sport});
        st.bind(11, std::int64_t{e.reply_dport});
        st.run();
        st.reset();
    }
    txn.commit();
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
    std::vector<std::string> command;
};

// `captured` turns true once packets may be in the database (from then on it is never thrown away).
int run_capture(const Invocation& inv, const CaptureArgs& a, bool trace, bool& captured) {
    if (::geteuid() != 0) throw Fatal("capturing needs root (network namespaces, packet sockets); run it with sudo");
    if (!a.command.empty()) check_runnable(a.command[0]);
    Resolved r = resolve_targets(a.targets, true);

    // Created mode 0600 (its -wal and -shm then are too), never through a dangling symbolic link.
    const auto created = store::create_private_file(a.db_path);
    if (!created) throw Fatal(created.error());
    const bool fresh = *created;
    if (!fresh) {
        auto existing = store::Database::open(a.db_path);
        if (!existing.points().empty())
            throw Fatal(a.db_path + ": already holds a capture; give a new --db file (nothing was changed)");
    }
    // Until every point captures, a failure leaves no trace: a database file this run created is removed
    // (declared before `db`, so it runs after the database is closed).
    // The spool only once this run has created it: a file of that name it refused is somebody else's.
    struct DiscardUnlessStarted {
        std::string path;
        bool fresh;
        bool started = false;
        std::string spool;
        ~DiscardUnlessStarted() {
            if (started || !fresh) return;
            std::error_code ignored;
            for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix, ignored);
            if (!spool.empty()) std::filesystem::remove(spool, ignored);
        }
    } discard{a.db_path, fresh, false, {}};
    store::Database db = store::Database::open(a.db_path);
    db.set_meta("created_by", std::string("hoptrace ") + k_version);
    db.set_meta("hoptrace_version", k_version);
    db.set_meta("command_line", inv.command_line);
    db.set_meta("capture_start_ns", std::to_string(now_ns()));
    if (r.topology.masquerade) db.set_meta("masquerade", "yes");

    std::vector<LivePoint> live;
    for (const auto& p : r.topology.points) {
        store::Point sp;
        sp.name = p.name;
        sp.netns = netns_label(r, p.netns);
        sp.ifname = p.link.ifname;
        sp.role = to_string(p.role);
        sp.role_evidence = "live topology";
        for (const auto& address : p.link.addresses) sp.addresses += (sp.addresses.empty() ? "" : " ") + address;
        sp.ifindex = p.link.ifindex;
        sp.source = "live";
        sp.link_type = static_cast<std::uint32_t>(LinkType::ethernet);
        const auto id = static_cast<std::uint32_t>(db.add_point(sp));
        live.push_back({id, p.name, r.namespaces[p.netns].get(), p.link.ifname});
    }

    const Netns& host = *r.namespaces[0];
    if (auto ct = conntrack_dump(host)) store_conntrack(db, *ct, "dump-start");
    else if (!a.quiet) std::fprintf(stderr, "hoptrace: note: %s (the report will not compare with conntrack)\n", ct.error().c_str());

    std::vector<std::uint32_t> point_ids;
    point_ids.reserve(live.size());
    for (const auto& p : live) point_ids.push_back(p.point_id);
    // While capturing, each point's thread only copies its frames into a chunk of its own; the spool file's thread
    // appends full chunks to FILE-spool (the database names it from here on). Dissecting and the row per packet
    // wait until the capture has stopped.
    std::optional<store::SpoolFile> spool_file;
    spool_file.emplace(db);
    discard.spool = spool_file->path();
    store::Spool spool(*spool_file, point_ids);
    LiveOptions options;
    options.filter = a.filter;
    options.snaplen = a.snaplen;
    options.buffer_bytes = a.buffer_mb << 20;
    options.count = static_cast<std::uint64_t>(a.count);
    LiveCapture capture(
        live, options, [&spool](std::uint32_t point, const Frame& frame) { spool.append(point, frame); },
        [&spool](std::uint32_t point, bool final) {
            if (final) spool.flush(point);
            else spool.tick(point);
        });

    std::optional<SignalGuard> signals;  // only while capturing: Ctrl-C during correlation just stops it
    signals.emplace();
    g_signals = 0;
    if (auto started = capture.start(); !started) {
        const std::string spool_path = spool_file->path();
        spool_file.reset();
        std::error_code ignored;
        std::filesystem::remove(spool_path, ignored);
        if (!fresh) db.exec("DELETE FROM packets; DELETE FROM points; DELETE FROM conntrack; DELETE FROM meta;");
        throw Fatal(started.error());
    }
    discard.started = true;
    captured = true;
    if (!a.quiet) {
        std::string names;
        for (const auto& p : live) names += (names.empty() ? "" : ", ") + p.name;
        std::fprintf(stderr, "capturing on %s\n", names.c_str());
    }

    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    pid_t child = a.command.empty() ? -1 : spawn(a.command);
    int child_status = 0;
    std::optional<double> child_done_at;
    StatusLine status(a.quiet, std::chrono::milliseconds(500));
    std::string stop_reason;
    while (stop_reason.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const double t = elapsed();
        if (g_signals.load() > 0) stop_reason = "signal";
        else if (a.duration_s > 0 && t >= a.duration_s) stop_reason = "duration";
        else if (a.count > 0 && capture.total_packets() >= options.count) stop_reason = "count";  // set by the capture
        else if (capture.all_ended()) stop_reason = "every point ended";
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
    capture.stop();
    capture.join();
    if (child > 0 && !child_done_at) {
        ::kill(child, SIGTERM);
        ::waitpid(child, &child_status, 0);
    }
    spool_file->close();  // everything delivered is in the spool file before anything else happens
    spool_file.reset();

    // The spool becomes packets rows: dissect + one row per sighting, now that the traffic is no longer competing.
    // A second Ctrl-C stops after the current chunk; the rest stays spooled for `hoptrace correlate`.
    const std::uint64_t captured_total = capture.total_packets();
    StatusLine storing(a.quiet, std::chrono::milliseconds(250));
    store::Writer writer(db);
    const auto ingested = store::ingest_spool(db, writer, [&](std::uint64_t frames) {
        storing.update([&] {
            return "storing " + std::to_string(frames) + " of " + std::to_string(captured_total) + " packets…";
        });
        return g_signals.load() < 2;
    });
    storing.clear();
    writer.close();
    if (!ingested.torn.empty()) std::fprintf(stderr, "hoptrace: %s\n", ingested.torn.c_str());
    if (ingested.stopped && !a.quiet) {
        const auto left = store::spool_size(db);
        std::fprintf(stderr, "hoptrace: %llu packets are still spooled (%s)\n",
                     static_cast<unsigned long long>(left.frames), left.path.c_str());
    }

    const auto stats = capture.stats();
    for (std::size_t i = 0; i < live.size(); ++i) {
        auto p = db.find_point(live[i].name);
        if (!p) continue;
        p->kernel_drops = stats[i].kernel_drops + stats[i].interface_drops;
        p->link_type = static_cast<std::uint32_t>(stats[i].link_type);  // a tun device is raw IP, not Ethernet
        p->note = stats[i].note;
        db.update_point(*p);
        if (!a.quiet) {
            std::fprintf(stderr, "  %-20s %8llu packets, %llu dropped by the kernel%s%s\n", live[i].name.c_str(),
                         static_cast<unsigned long long>(p->packets),
                         static_cast<unsigned long long>(p->kernel_drops), stats[i].note.empty() ? "" : "; ",
                         stats[i].note.c_str());
        }
    }
    // The window the points really captured (analysis relies on it: a packet in flight at the stop is no loss).
    const auto [window_start, window_stop] = capture.window();
    db.set_meta("capture_start_ns", std::to_string(window_start));
    db.set_meta("capture_stop_ns", std::to_string(window_stop));
    db.set_meta("stop_reason", stop_reason);
    if (auto ct = conntrack_dump(host)) store_conntrack(db, *ct, "dump-end");
    db.build_indexes();
    if (child > 0 && !a.quiet) {
        if (WIFEXITED(child_status) && WEXITSTATUS(child_status) != 0)
            std::fprintf(stderr, "hoptrace: note: '%s' exited with status %d\n", a.command[0].c_str(), WEXITSTATUS(child_status));
    }

    if (g_signals.load() > 1) {  // a second Ctrl-C: stop now, the capture is safe in the database
        std::fprintf(stderr, "hoptrace: interrupted; run 'hoptrace correlate --db %s' later\n", a.db_path.c_str());
        return k_exit_runtime;
    }
    if (a.no_correlate && !trace) return k_exit_ok;
    signals.reset();  // the capture is safe on disk: from here Ctrl-C simply ends hoptrace
    correlate::run(db);
    if (trace) std::cout << report::render_text(report::load_report(db));
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
        options.add_options()("db", po::value(&a.db_path), "keep the capture in this database (default: a temporary file)");
    } else {
        options.add_options()("db", po::value(&a.db_path)->required(), "new database file to store the capture in");
    }
    a.targets.add_to(options);
    options.add_options()
        ("filter", po::value(&a.filter), "BPF filter (tcpdump syntax) applied at every point")
        ("snaplen", po::value(&a.snaplen)->default_value(262144), "bytes kept of each packet")
        ("buffer-mb", po::value(&a.buffer_mb)->default_value(64), "kernel capture buffer per point (MiB)")
        ("duration", po::value(&a.duration_s), "stop after this many seconds")
        ("count", po::value(&a.count), "stop once this many packets were captured (all points together)")
        ("grace", po::value(&a.grace_s)->default_value(1.0), "seconds to keep capturing after CMD exits (replies)")
        ("quiet,q", po::bool_switch(&a.quiet), "no status line or summary on stderr");
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
            throw Fatal(dir + ": cannot create a temporary directory: " + std::strerror(error));
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
