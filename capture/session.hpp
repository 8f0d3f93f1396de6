#pragma once
// A live capture session: the wiring of tracer (live capture, conntrack) and store (database, spool, writer) that
// `hoptrace capture` and `trace` run, without any of the command line. The CLI resolves the targets, parses
// options, handles signals, runs the command and prints; the session does the rest:
//
//   Session s(db_path, points, host, options);   // database created (0600) or claimed, meta, points, conntrack
//   s.start();                                   // every point captures; frames go to the spool file only
//                                                // (and with trace_rules, the firewall's verdicts are traced)
//   … s.capture().stats() …                      // while the CLI waits for a stop
//   s.stop("signal");                            // points drained, spool closed, conntrack dumped, window kept
//   s.store(progress);                           // spool -> packets rows, point statistics, indexes
//
// A session that never started leaves nothing behind: a database it created is removed, one it was given is
// emptied again. Once started, nothing captured is ever thrown away (the spool, then the rows).

#include "store/database.hpp"
#include "store/lock.hpp"
#include "store/spool.hpp"
#include "tracer/conntrack.hpp"
#include "tracer/live_capture.hpp"
#include "tracer/netns.hpp"
#include "tracer/rule_trace.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace::capture {

struct SessionPoint {
    store::Point point;         // name, netns label, ifname, role, evidence, addresses, ifindex (id is assigned)
    const Netns* ns = nullptr;  // where the interface is
    std::optional<ContainerInfo> container;  // a --container target's own point: what the engine said
};

struct SessionOptions {
    LiveOptions live;
    std::string command_line;  // meta command_line
    bool masquerade = false;   // meta masquerade: the topology found MASQUERADE on the uplink
    store::SpoolLimits spool;
    // --trace-rules: the firewall's verdicts for packets of these networks, traced in the host namespace
    // (tracer/rule_trace.hpp) from start() to stop(), stored in rule_traces.
    std::optional<std::vector<TracedNetwork>> trace_rules;
    std::vector<std::uint16_t> trace_ports;  // the host's published ports: their connections' first packets too
};

// Why the capture stopped, in the words stored in meta's stop_reason and printed.
inline constexpr const char* k_stop_disk_full = "disk full";

struct PointResult {
    std::string name;
    std::uint64_t packets = 0;
    std::uint64_t kernel_drops = 0;
    std::string note;
};

class Session {
public:
    // Creates `db_path` (mode 0600) or claims an existing database that holds no capture, and takes its writer lock
    // (store/lock.hpp) first. Throws std::runtime_error (one line naming the file) when it cannot; nothing is
    // changed then.
    Session(const std::string& db_path, std::vector<SessionPoint> points, const Netns& host, SessionOptions options);
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session();

    // Opens every point and starts capturing. On failure (one line naming the point), nothing captures and the
    // database is as it was before the session (removed when the session created it).
    [[nodiscard]] tl::expected<void, std::string> start();
    [[nodiscard]] bool started() const noexcept { return m_started; }

    [[nodiscard]] const LiveCapture& capture() const { return *m_capture; }
    // The capture stopped on its own: every point ended, or the disk filled (the spool could not take more).
    [[nodiscard]] std::optional<std::string> stopped_by_itself() const;

    // Stops every point, waits until all delivered their last frame and the spool file holds them, dumps conntrack
    // and stores the window and `reason` in meta (k_stop_disk_full replaces it when the disk filled meanwhile).
    // Returns the stop reason stored.
    std::string stop(const std::string& reason);

    // Turns the spool into packets rows (store::ingest_spool; `progress` returning false leaves the rest spooled),
    // then stores each point's statistics and builds the indexes.
    store::SpoolIngest store(const std::function<bool(std::uint64_t frames)>& progress);

    [[nodiscard]] std::vector<PointResult> results() const;
    [[nodiscard]] store::Database& db() noexcept { return m_db; }
    // Notes for the user (e.g. conntrack could not be read), in the order they arose.
    [[nodiscard]] const std::vector<std::string>& notes() const noexcept { return m_notes; }

private:
    void store_conntrack(const char* event);
    tl::expected<void, std::string> start_tracing();
    void store_rule_traces();
    void discard() noexcept;

    std::string m_path;
    store::WriterLock m_lock;
    bool m_created = false;
    store::Database m_db;
    const Netns& m_host;
    std::optional<ConntrackSocket> m_conntrack;
    bool m_conntrack_failed = false;
    SessionOptions m_options;
    std::vector<LivePoint> m_live;
    std::optional<store::SpoolFile> m_spool_file;
    std::unique_ptr<store::Spool> m_spool;
    std::unique_ptr<LiveCapture> m_capture;
    std::unique_ptr<RuleTracer> m_tracer;
    std::unique_ptr<RuleCounters> m_counters;
    bool m_started = false;
    bool m_stopped = false;
    std::optional<std::string> m_failure;  // why the capture stopped itself (the spool's error), once known
    std::vector<std::string> m_notes;
};

// A capture that was killed before it stored its spool leaves frames in its spool file (FILE-spool): the commands
// that write (correlate, import) store them as packets first. Takes nothing when none wait; returns what was
// stored. `progress` as in store::ingest_spool (whose last transaction applies a window cut the capture left).
store::SpoolIngest store_leftover_spool(store::Database& db,
                                        const std::function<bool(std::uint64_t frames)>& progress = {});

}  // namespace hoptrace::capture
