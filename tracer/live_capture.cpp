#include "tracer/live_capture.hpp"

#include "tracer/privileges.hpp"

#include <poll.h>

#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>

namespace hoptrace {
namespace {

constexpr int k_timeout_ms = 100;  // pcap read timeout = TPACKET_V3 block timeout

}  // namespace

// Lets the libpcap callback reach the capture's window and counters.
struct LiveCaptureAccess {
    static std::int64_t start_ts(const LiveCapture& c) noexcept { return c.m_start_ts.load(std::memory_order_relaxed); }
    static std::int64_t stop_ts(const LiveCapture& c) noexcept { return c.m_stop_ts.load(std::memory_order_relaxed); }
    static std::uint64_t count(const LiveCapture& c) noexcept { return c.m_options.count; }
};

namespace {

struct Context {
    LiveCapture* capture;
    const FrameSink* sink;
    std::uint32_t point_id;
    LinkType link_type;
    std::int64_t ts_scale;  // 1 for nanosecond timestamps, 1000 for microsecond
    std::atomic<std::uint64_t>* packets;
    std::atomic<std::uint64_t>* total;
    pcap_t* handle;
    std::exception_ptr error;  // the sink threw: no exception may unwind through libpcap's C frames
};

void on_packet(u_char* user, const pcap_pkthdr* h, const u_char* bytes) {
    auto* ctx = reinterpret_cast<Context*>(user);
    Frame frame;
    frame.ts_ns = static_cast<std::int64_t>(h->ts.tv_sec) * 1'000'000'000 +
                  static_cast<std::int64_t>(h->ts.tv_usec) * ctx->ts_scale;
    frame.wire_len = h->len;
    frame.link_type = ctx->link_type;
    frame.bytes = std::span<const std::uint8_t>(bytes, h->caplen);
    if (ctx->error) return;
    if (const std::int64_t begin = LiveCaptureAccess::start_ts(*ctx->capture); begin == 0 || frame.ts_ns < begin)
        return;
    if (const std::int64_t end = LiveCaptureAccess::stop_ts(*ctx->capture); end != 0 && frame.ts_ns > end) return;
    try {
        (*ctx->sink)(ctx->point_id, frame);
    } catch (...) {
        ctx->error = std::current_exception();
        pcap_breakloop(ctx->handle);
        return;
    }
    // Only this thread writes its point's counter: a plain store, no locked read-modify-write per packet.
    ctx->packets->store(ctx->packets->load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    // The shared total (a cache line all points write) is kept only when --count needs it exactly.
    const std::uint64_t limit = LiveCaptureAccess::count(*ctx->capture);
    if (limit == 0) return;
    const std::uint64_t total = ctx->total->fetch_add(1, std::memory_order_relaxed) + 1;
    // The window ends now, not at this packet's timestamp: other points may already have handed over
    // packets stamped later, and every point must end its window at the same moment.
    if (total == limit) ctx->capture->stop();
}

// The tick, with the sink's error handling: no exception leaves a capture thread.
void run_tick(Context& ctx, const PointTick& on_tick, bool final) noexcept {
    if (!on_tick || ctx.error) return;
    try {
        on_tick(ctx.point_id, final);
    } catch (...) {
        ctx.error = std::current_exception();
    }
}

std::optional<LinkType> link_type_of(int dlt) {
    switch (dlt) {
        case DLT_EN10MB:
            return LinkType::ethernet;
        case DLT_LINUX_SLL:
            return LinkType::linux_sll;
#ifdef DLT_LINUX_SLL2
        case DLT_LINUX_SLL2:
            return LinkType::linux_sll2;
#endif
        case DLT_RAW:
            return LinkType::raw;
#ifdef DLT_IPV4
        case DLT_IPV4:
            return LinkType::ipv4;
        case DLT_IPV6:
            return LinkType::ipv6;
#endif
        default:
            return std::nullopt;
    }
}

std::string activate_error(int rc, pcap_t* h, const LivePoint& p) {
    const std::string where = p.name + ": ";
    const std::string ns = p.ns != nullptr && !p.ns->name().empty() ? " in namespace " + p.ns->name() : "";
    switch (rc) {
        case PCAP_ERROR_NO_SUCH_DEVICE:
            return where + "no interface '" + p.ifname + "'" + ns + " (is the container still running?)";
        case PCAP_ERROR_PERM_DENIED:
            return where + "permission denied to capture on " + p.ifname + "; run hoptrace as root";
        case PCAP_ERROR_IFACE_NOT_UP:
            return where + "interface " + p.ifname + ns + " is down";
        default:
            return where + "cannot capture on " + p.ifname + ns + ": " + pcap_geterr(h);
    }
}

// A point's libpcap handle, activated, with what its frames need.
struct OpenedHandle {
    PcapPtr handle;
    LinkType link_type = LinkType::ethernet;
    std::int64_t ts_scale = 1;  // 1 for nanosecond timestamps, 1000 for microsecond
};

// Creates and activates the handle on the point's interface (in the namespace the thread entered), or says why not.
tl::expected<OpenedHandle, std::string> open_handle(const LivePoint& p, const LiveOptions& options) {
    std::array<char, PCAP_ERRBUF_SIZE> errbuf{};
    OpenedHandle out;
    out.handle = PcapPtr(pcap_create(p.ifname.c_str(), errbuf.data()));
    pcap_t* h = out.handle.get();
    if (h == nullptr) {
        return tl::unexpected(p.name + ": " + errbuf.data());
    }
    pcap_set_snaplen(h, options.snaplen);
    pcap_set_promisc(h, 1);  // like tcpdump: a bridge shows port-to-port traffic only when promiscuous
    pcap_set_timeout(h, k_timeout_ms);
    pcap_set_buffer_size(h, options.buffer_bytes);
    const bool nano = pcap_set_tstamp_precision(h, PCAP_TSTAMP_PRECISION_NANO) == 0;
    if (const int rc = pcap_activate(h); rc < 0) {
        return tl::unexpected(activate_error(rc, h, p));
    }
    const auto link = link_type_of(pcap_datalink(h));
    if (!link) {
        return tl::unexpected(p.name + ": unsupported link type " + std::to_string(pcap_datalink(h)) + " on " +
                              p.ifname);
    }
    out.link_type = *link;
    out.ts_scale = nano && pcap_get_tstamp_precision(h) == PCAP_TSTAMP_PRECISION_NANO ? 1 : 1000;
    return out;
}

// Compiles and sets --filter (when given) on the handle.
tl::expected<void, std::string> set_filter(pcap_t* h, const LivePoint& p, const std::string& filter) {
    if (filter.empty()) {
        return {};
    }
    bpf_program program{};
    if (pcap_compile(h, &program, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
        return tl::unexpected("--filter '" + filter + "': " + pcap_geterr(h));
    }
    const int rc = pcap_setfilter(h, &program);
    pcap_freecode(&program);
    if (rc != 0) {
        return tl::unexpected(p.name + ": cannot set the filter: " + pcap_geterr(h));
    }
    return {};
}

// libpcap's blocking read can wait for ever on an idle interface: with TPACKET_V3 it leaves the waking to the
// kernel's block timer, and the kernel retires no empty block. So the thread polls the socket itself and reads
// without blocking: it comes back at least every k_timeout_ms, for the tick (a sink's buffered frames reach
// the store on a quiet point too) and to see a stop. Without non-blocking mode (-1) it reads as before.
int pollable_fd(pcap_t* h) {
    std::array<char, PCAP_ERRBUF_SIZE> errbuf{};
    return pcap_setnonblock(h, 1, errbuf.data()) == 0 ? pcap_get_selectable_fd(h) : -1;
}

// Hands the point's frames to the sink until `stop` or the sink fails. Returns the note for the point when its
// interface went away (container stopped) or its socket broke first.
std::optional<std::string> read_until_stopped(Context& ctx, const std::atomic<bool>& stop, const PointTick& tick,
                                              int fd) {
    auto* user = reinterpret_cast<u_char*>(&ctx);
    while (!stop.load() && !ctx.error) {
        pollfd ready_fd{fd, POLLIN, 0};
        if (fd >= 0) static_cast<void>(::poll(&ready_fd, 1, k_timeout_ms));  // a retired block, or the timeout
        const int n = pcap_dispatch(ctx.handle, -1, on_packet, user);
        if (n == PCAP_ERROR) {
            std::string why = pcap_geterr(ctx.handle);  // libpcap's sentence: "The interface disappeared"
            if (!why.empty() && why[0] >= 'A' && why[0] <= 'Z' && (why.size() < 2 || why[1] < 'A' || why[1] > 'Z'))
                why[0] = static_cast<char>(why[0] - 'A' + 'a');
            return "capture ended early: " + why;
        }
        run_tick(ctx, tick, false);
        // libpcap reports a broken socket itself; never spin on a poll that keeps failing without a reason it gives.
        if (n == 0 && (ready_fd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
}

// Drains what the kernel already captured. With TPACKET_V3 the kernel hands over a partly filled block only when
// the block timeout (the pcap timeout) expires, so keep reading without blocking for a little longer than that
// timeout. Also after the interface disappeared: the frames it captured until then wait in the ring's last block,
// which the kernel's block timer still retires (libpcap reads a retired block before it looks at the socket's
// error again).
void drain_ring(Context& ctx, bool ended_early) {
    std::array<char, PCAP_ERRBUF_SIZE> errbuf{};
    if (ctx.error || pcap_setnonblock(ctx.handle, 1, errbuf.data()) != 0) {
        return;
    }
    auto* user = reinterpret_cast<u_char*>(&ctx);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3 * k_timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
        const int n = pcap_dispatch(ctx.handle, -1, on_packet, user);
        if (n == PCAP_ERROR && !ended_early) break;
        if (n <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace

LiveCapture::LiveCapture(std::vector<LivePoint> points, LiveOptions options, FrameSink sink, PointTick tick)
    : m_points(std::move(points)), m_options(std::move(options)), m_sink(std::move(sink)), m_tick(std::move(tick)) {
    for (std::size_t i = 0; i < m_points.size(); ++i) m_state.push_back(std::make_unique<PointState>());
}

LiveCapture::~LiveCapture() {
    stop();
    try {
        join();
    } catch (...) {  // a destructor never throws; callers who care call join() themselves
    }
}

tl::expected<void, std::string> LiveCapture::start() {
    for (std::size_t i = 0; i < m_points.size(); ++i) m_threads.emplace_back([this, i] { run_point(i); });
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_ready == m_points.size(); });
    if (!m_start_error.empty()) {
        const std::string error = m_start_error;
        lock.unlock();
        stop();
        join();
        return tl::unexpected(error);
    }
    m_start_ts.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    return {};
}

void LiveCapture::stop() noexcept {
    const auto now =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    stop_at(now);
}

void LiveCapture::stop_at(std::int64_t ts_ns) noexcept {
    std::int64_t open = 0;
    m_stop_ts.compare_exchange_strong(open, ts_ns);  // the first stop defines the window
    m_stop.store(true);
    std::lock_guard lock(m_mutex);
    for (auto& st : m_state)
        if (pcap_t* h = st->handle.load()) pcap_breakloop(h);
}

void LiveCapture::join() {
    for (auto& t : m_threads)
        if (t.joinable()) t.join();
    m_threads.clear();
    if (m_sink_error) std::rethrow_exception(std::exchange(m_sink_error, nullptr));
}

std::vector<LiveStats> LiveCapture::stats() const {
    std::vector<LiveStats> out;
    std::lock_guard lock(m_mutex);
    for (const auto& st : m_state) {
        LiveStats s;
        s.packets = st->packets.load();
        s.kernel_drops = st->kernel_drops;
        s.interface_drops = st->interface_drops;
        s.ended = st->ended.load();
        s.link_type = st->link_type;
        s.note = st->note;
        out.push_back(std::move(s));
    }
    return out;
}

std::uint64_t LiveCapture::total_packets() const noexcept {
    if (m_options.count != 0) return m_total.load(std::memory_order_relaxed);
    std::uint64_t total = 0;
    for (const auto& st : m_state) total += st->packets.load(std::memory_order_relaxed);
    return total;
}

bool LiveCapture::all_ended() const {
    for (const auto& st : m_state)
        if (!st->ended.load()) return false;
    return true;
}

void LiveCapture::run_point(std::size_t index) noexcept {
    PointState& st = *m_state[index];
    const LivePoint& p = m_points[index];
    auto ready = [&](const std::string& error) {
        std::lock_guard lock(m_mutex);
        if (!error.empty() && m_start_error.empty()) m_start_error = error;
        ++m_ready;
        m_cv.notify_all();
    };
    auto cannot_start = [&](const std::string& error) {
        st.ended = true;
        ready(error);
    };
    if (auto entered = p.ns->enter(); !entered) {
        cannot_start(p.name + ": " + entered.error());
        return;
    }
    auto opened = open_handle(p, m_options);
    if (!opened) {
        cannot_start(opened.error());
        return;
    }
    pcap_t* h = opened->handle.get();
    st.link_type = opened->link_type;  // read by stats() after join()
    if (auto filtered = set_filter(h, p, m_options.filter); !filtered) {
        cannot_start(filtered.error());
        return;
    }
    const int fd = pollable_fd(h);
    {
        std::lock_guard lock(m_mutex);
        st.handle.store(h);
    }
    // Reading the open handle needs no privilege: from here the thread that sees the traffic has none.
    if (m_options.drop_capabilities) drop_all_capabilities();
    ready("");

    Context ctx{this, &m_sink, p.point_id, opened->link_type, opened->ts_scale, &st.packets, &m_total, h, nullptr};
    const std::optional<std::string> ended_early = read_until_stopped(ctx, m_stop, m_tick, fd);
    if (ended_early) {
        std::lock_guard lock(m_mutex);
        st.note = *ended_early;
    }
    drain_ring(ctx, ended_early.has_value());
    if (ended_early) st.ended = true;
    run_tick(ctx, m_tick, true);  // this point delivers nothing more
    pcap_stat ps{};
    std::lock_guard lock(m_mutex);
    if (ctx.error) {
        if (!m_sink_error) m_sink_error = ctx.error;
        m_stop.store(true);
        for (auto& other : m_state)
            if (pcap_t* o = other->handle.load(); o != nullptr && o != h) pcap_breakloop(o);
    }
    if (pcap_stats(h, &ps) == 0) {
        st.kernel_drops = ps.ps_drop;
        st.interface_drops = ps.ps_ifdrop;
    }
    st.ended = true;
    st.handle.store(nullptr);
}

}  // namespace hoptrace
