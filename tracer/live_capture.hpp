#pragma once
// Live capture on several points at once: one thread per point enters the point's network namespace with
// setns() and opens a libpcap handle there (the socket stays in that namespace). Nanosecond timestamps from
// the kernel's one realtime clock, so times are comparable across namespaces.

#include "tracer/handles.hpp"
#include "tracer/netns.hpp"
#include "tracer/packet.hpp"

#include <pcap/pcap.h>
#include <tl/expected.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace hoptrace {

struct LivePoint {
    std::uint32_t point_id = 0;
    std::string name;  // for messages
    const Netns* ns = nullptr;
    std::string ifname;
};

struct LiveOptions {
    std::string filter;  // BPF, tcpdump syntax; "" = everything
    int snaplen = 262144;
    int buffer_bytes = 64 << 20;     // kernel ring per point: large enough for bursts
    std::uint64_t count = 0;         // stop once this many packets were captured (0 = no limit)
    bool drop_capabilities = false;  // each point's thread drops every capability once its handle is open
};

struct LiveStats {
    std::uint64_t packets = 0;                // delivered by libpcap (and handed to the sink)
    std::uint64_t kernel_drops = 0;           // pcap_stats ps_drop
    std::uint64_t interface_drops = 0;        // pcap_stats ps_ifdrop
    LinkType link_type = LinkType::ethernet;  // what libpcap's handle delivers (pcap_datalink), once opened
    bool ended = false;                       // the point stopped on its own (interface gone …)
    std::string note;                         // why it ended early, or ""
};

// Called on the capture threads, one call per frame; frame.bytes is valid during the call only.
using FrameSink = std::function<void(std::uint32_t point_id, const Frame& frame)>;
// Called on a point's capture thread after each read from the kernel (at least every ~100 ms while the point
// captures, with or without frames; final = false), and once more when the point has delivered its last frame
// (final = true): a sink that collects a point's frames hands them on from here. It may throw like the sink.
using PointTick = std::function<void(std::uint32_t point_id, bool final)>;

class LiveCapture {
public:
    LiveCapture(std::vector<LivePoint> points, LiveOptions options, FrameSink sink, PointTick tick = {});
    LiveCapture(const LiveCapture&) = delete;
    LiveCapture& operator=(const LiveCapture&) = delete;
    ~LiveCapture();

    // Opens every point and returns once all capture, or with the first failure (one line naming the point
    // and what to do); after a failure nothing captures. The capture window opens when the last point is
    // ready: what a point sees before that is not handed to the sink, so no point starts with packets the
    // others could not have seen.
    tl::expected<void, std::string> start();

    // Asks every point to stop. The capture window ends now: each point still drains what the kernel
    // captured up to this moment, and nothing timestamped later is handed to the sink. Thread-safe.
    void stop() noexcept;
    // Waits for every point's thread; rethrows the first exception the sink threw (which stopped them all).
    void join();

    // The capture window [start, stop] in ns since the epoch: every point delivered what the kernel
    // stamped inside it and nothing outside. 0 while not opened / not closed.
    [[nodiscard]] std::pair<std::int64_t, std::int64_t> window() const noexcept {
        return {m_start_ts.load(), m_stop_ts.load()};
    }
    [[nodiscard]] std::vector<LiveStats> stats() const;  // packets live; drops final after join()
    [[nodiscard]] std::uint64_t total_packets() const noexcept;
    [[nodiscard]] bool all_ended() const;
    [[nodiscard]] const std::vector<LivePoint>& points() const noexcept { return m_points; }

private:
    struct PointState {
        std::atomic<pcap_t*> handle{nullptr};
        std::atomic<std::uint64_t> packets{0};
        std::atomic<bool> ended{false};
        std::uint64_t kernel_drops = 0;
        std::uint64_t interface_drops = 0;
        LinkType link_type = LinkType::ethernet;
        std::string note;
    };
    void run_point(std::size_t index) noexcept;
    void stop_at(std::int64_t ts_ns) noexcept;
    friend struct LiveCaptureAccess;

    std::vector<LivePoint> m_points;
    LiveOptions m_options;
    FrameSink m_sink;
    PointTick m_tick;
    std::vector<std::unique_ptr<PointState>> m_state;
    std::vector<std::thread> m_threads;
    std::atomic<bool> m_stop{false};
    std::atomic<std::int64_t> m_start_ts{0};  // start of the capture window: every point ready (0 = not yet)
    std::atomic<std::int64_t> m_stop_ts{0};   // end of the capture window (0 = open)
    std::atomic<std::uint64_t> m_total{0};    // every point's packets together; kept only with options.count
    mutable std::mutex m_mutex;
    std::condition_variable m_cv;
    std::size_t m_ready = 0;
    std::string m_start_error;
    std::exception_ptr m_sink_error;
};

}  // namespace hoptrace
