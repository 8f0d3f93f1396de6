#include "capture/session.hpp"

#include "store/conntrack.hpp"
#include "store/containers.hpp"
#include "store/private_file.hpp"
#include "store/rule_traces.hpp"
#include "store/writer.hpp"
#include "tracer/conntrack.hpp"
#include "version.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <stdexcept>

namespace hoptrace::capture {
namespace {

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The database file, created 0600 (its -wal and -shm then are too), never through a dangling symbolic link.
bool create_database_file(const std::string& path) {
    const auto created = store::create_private_file(path);
    if (!created) throw std::runtime_error(created.error());
    return *created;
}

store::WriterLock lock_database_file(const std::string& path) {
    auto lock = store::WriterLock::acquire(path);
    if (!lock) throw std::runtime_error(lock.error());
    return std::move(*lock);
}

store::Database open_for_capture(const std::string& path, bool created) {
    // Asked before opening to write, which would upgrade a file of an older hoptrace before refusing it.
    if (!created && store::Database::file_holds_points(path))
        throw std::runtime_error(path + ": already holds a capture; give a new --db file (nothing was changed)");
    return store::Database::open(path);
}

}  // namespace

Session::Session(const std::string& db_path, std::vector<SessionPoint> points, const Netns& host,
                 SessionOptions options)
    : m_path(db_path), m_created(create_database_file(db_path)), m_host(host), m_options(std::move(options)) {
    try {
        m_lock = lock_database_file(db_path);
        m_db = open_for_capture(db_path, m_created);
        m_db.set_meta("created_by", std::string("hoptrace ") + k_version);
        m_db.set_meta("hoptrace_version", k_version);
        m_db.set_meta("command_line", m_options.command_line);
        m_db.set_meta("capture_start_ns", std::to_string(now_ns()));
        if (m_options.masquerade) m_db.set_meta("masquerade", "yes");
        for (auto& p : points) {
            p.point.source = "live";
            p.point.link_type = static_cast<std::uint32_t>(LinkType::ethernet);
            const auto id = static_cast<std::uint32_t>(m_db.add_point(p.point));
            if (p.container) store::add_container(m_db, id, *p.container);
            m_live.push_back({id, p.point.name, p.ns, p.point.ifname});
        }
        store_conntrack("dump-start");
        store::add_proxies(m_db, docker_proxies(m_host));  // which published ports Docker's userland proxy relays
    } catch (...) {
        discard();  // the database is as it was (a claimed one must not be emptied while another writer has it)
        throw;
    }
}

Session::~Session() {
    if (!m_started) discard();
}

void Session::discard() noexcept {
    // Until every point captures, a failure leaves no trace: a database this session created is removed, one it was
    // given is emptied again; the spool only once this session created it (a file of that name it refused is
    // somebody else's).
    try {
        m_capture.reset();
        m_spool.reset();
        std::string spool_path;
        if (m_spool_file) {
            spool_path = m_spool_file->path();
            m_spool_file.reset();
        }
        std::error_code ignored;
        if (!spool_path.empty()) std::filesystem::remove(spool_path, ignored);
        if (m_created && m_lock.held()) {  // without the lock, another hoptrace may have claimed the new file
            m_db = store::Database();
            for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(m_path + suffix, ignored);
        } else if (m_db.handle() != nullptr && m_lock.held()) {
            m_db.clear();
        }
    } catch (...) {  // NOLINT(bugprone-empty-catch): best effort; the start error is what the user needs to see
    }
}

void Session::store_conntrack(const char* event) {
    if (!m_conntrack) {
        if (m_conntrack_failed) return;  // said once
        // Opened once, in the host namespace, while hoptrace may still enter it: the end-of-capture dump then
        // needs no more than CAP_NET_ADMIN.
        auto opened = ConntrackSocket::open(m_host);
        if (!opened) {
            m_conntrack_failed = true;
            m_notes.push_back(opened.error() + " (the report will not compare with conntrack)");
            return;
        }
        m_conntrack.emplace(std::move(*opened));
    }
    auto entries = m_conntrack->dump();
    if (!entries) {
        m_notes.push_back(entries.error() + " (the report will not compare with conntrack)");
        return;
    }
    store::insert_conntrack(m_db, now_ns(), event, *entries);
}

// Tables a killed capture left (its process gone) are removed by every capture; with trace_rules this one's is added.
tl::expected<void, std::string> Session::start_tracing() {
    if (auto stale = remove_stale_trace_tables(m_host); stale) {
        for (const auto& name : *stale)
            m_notes.push_back("removed the nftables table inet " + name + " that a killed hoptrace left");
    } else if (m_options.trace_rules) {
        return tl::unexpected("--trace-rules: " + stale.error());
    }
    // The rules, with their counters, read now and at the stop: which rules matched packets meanwhile (without
    // --trace-rules the report names the drop rules that moved, as an inference) and the texts of those the traced
    // packets met. Best effort without --trace-rules.
    auto counters = RuleCounters::start(m_host);
    if (counters) m_counters = std::move(*counters);
    if (!m_options.trace_rules) return {};
    if (!counters) return tl::unexpected("--trace-rules: " + counters.error());
    auto tracer = RuleTracer::start(m_host, *m_options.trace_rules, m_options.trace_ports);
    if (!tracer) return tl::unexpected(tracer.error());
    m_tracer = std::move(*tracer);
    m_db.set_meta("trace_rules", m_tracer->table_name());
    return {};
}

void Session::store_rule_traces() {
    if (m_counters) {
        if (auto moved = m_counters->stop()) {
            store::insert_rule_counts(m_db, m_host.name(), *moved);
            m_db.set_meta("rule_counters", "read");
        }
    }
    if (!m_tracer) return;
    std::vector<RuleTraceEvent> events = m_tracer->stop();
    for (RuleTraceEvent& e : events)
        if (e.type == "rule" && m_counters) e.rule = m_counters->rule_text(e.family, e.table, e.handle);
    for (const auto& note : m_tracer->notes()) m_notes.push_back(note);
    store::insert_rule_traces(m_db, m_host.name(), events);
    m_db.set_meta("rule_trace_overflows", std::to_string(m_tracer->overflows()));
    if (m_tracer->overflows() > 0)
        m_notes.push_back("--trace-rules: the kernel could not deliver trace events " +
                          std::to_string(m_tracer->overflows()) +
                          " times (its socket was full): some packets' verdicts are missing");
}

tl::expected<void, std::string> Session::start() {
    if (auto tracing = start_tracing(); !tracing) {
        discard();
        return tl::unexpected(tracing.error());
    }
    std::vector<std::uint32_t> point_ids;
    point_ids.reserve(m_live.size());
    for (const auto& p : m_live) point_ids.push_back(p.point_id);
    // While capturing, each point's thread only copies its frames into a chunk of its own; the spool file's thread
    // appends full chunks to FILE-spool (the database names it from here on). Dissecting and the row per packet
    // wait until the capture has stopped.
    m_spool_file.emplace(m_db);
    m_spool = std::make_unique<store::Spool>(*m_spool_file, point_ids, m_options.spool);
    store::Spool& spool = *m_spool;
    m_capture = std::make_unique<LiveCapture>(
        m_live, m_options.live, [&spool](std::uint32_t point, const Frame& frame) { spool.append(point, frame); },
        [&spool](std::uint32_t point, bool final) {
            if (final) spool.flush(point);
            else spool.tick(point);
        });
    if (auto started = m_capture->start(); !started) {
        m_tracer.reset();  // its table goes with it
        discard();
        return tl::unexpected(started.error());
    }
    m_started = true;
    return {};
}

std::optional<std::string> Session::stopped_by_itself() const {
    if (m_spool_file && m_spool_file->disk_full()) return std::string(k_stop_disk_full);
    if (m_capture && m_capture->all_ended()) return std::string("every point ended");
    return std::nullopt;
}

std::string Session::stop(const std::string& reason) {
    if (m_stopped || !m_started) return reason;
    m_stopped = true;
    m_capture->stop();
    // A failed spool write (the disk filled) stopped every point; what the file holds is whole chunks.
    try {
        m_capture->join();
    } catch (const std::exception& e) {
        m_failure = e.what();
    }
    try {
        m_spool_file->close();  // everything delivered is in the spool file before anything else happens
    } catch (const std::exception& e) {
        if (!m_failure) m_failure = e.what();
    }
    const bool disk_full = m_spool_file->disk_full();
    const auto lost_from = m_spool_file->lost_from();
    m_spool_file.reset();
    m_spool.reset();
    std::string stored_reason = disk_full ? std::string(k_stop_disk_full) : reason;
    if (m_failure && !disk_full) stored_reason = *m_failure;
    // The window the points really captured (analysis relies on it: a packet in flight at the stop is no loss).
    // Small writes: the spool keeps room for them (and for storing it) when the disk fills.
    auto [window_start, window_stop] = m_capture->window();
    // The spool lost what came after a failed write: the window ends before the first frame it lost, so that no
    // point's missing frames look like packets lost on the way.
    if (lost_from) window_stop = std::min(window_stop, *lost_from - 1);
    {
        store::Transaction txn(m_db);
        m_db.set_meta("capture_start_ns", std::to_string(window_start));
        m_db.set_meta("capture_stop_ns", std::to_string(window_stop));
        // With the window, so that whoever stores the spool (this run, or correlate after a kill) applies the cut.
        if (lost_from) m_db.set_meta(store::k_meta_spool_cut, std::to_string(window_stop));
        m_db.set_meta("stop_reason", stored_reason);
        txn.commit();
    }
    store_conntrack("dump-end");
    try {
        store_rule_traces();
    } catch (const store::Error& e) {
        m_notes.push_back(std::string("--trace-rules: the trace events could not be stored: ") + e.what());
    }
    return stored_reason;
}

store::SpoolIngest Session::store(const std::function<bool(std::uint64_t)>& progress) {
    store::SpoolIngest ingested;
    std::exception_ptr failed;
    try {
        ingested = store_leftover_spool(m_db, progress);
    } catch (const store::Error&) {
        failed = std::current_exception();  // the point statistics are still worth keeping; then the error goes on
    }
    const auto stats = m_capture->stats();
    try {
        for (std::size_t i = 0; i < m_live.size(); ++i) {
            auto p = m_db.find_point(m_live[i].name);
            if (!p) continue;
            p->kernel_drops = stats[i].kernel_drops + stats[i].interface_drops;
            p->link_type = static_cast<std::uint32_t>(stats[i].link_type);  // a tun device is raw IP, not Ethernet
            p->note = stats[i].note;
            m_db.update_point(*p);
        }
    } catch (const store::Error&) {
        if (!failed) throw;  // the first failure (a full disk) is the one to tell
    }
    if (failed) std::rethrow_exception(failed);
    m_db.build_indexes();
    return ingested;
}

std::vector<PointResult> Session::results() const {
    std::vector<PointResult> out;
    for (const auto& live : m_live) {
        const auto p = m_db.find_point(live.name);
        if (!p) continue;
        out.push_back({p->name, p->packets, p->kernel_drops, p->note});
    }
    return out;
}

store::SpoolIngest store_leftover_spool(store::Database& db, const std::function<bool(std::uint64_t)>& progress) {
    const auto spooled = store::spool_size(db);
    if (!spooled.pending && spooled.legacy_frames == 0) return {};
    store::Writer writer(db);
    auto stored = store::ingest_spool(db, writer, progress);
    writer.close();
    return stored;
}

}  // namespace hoptrace::capture
