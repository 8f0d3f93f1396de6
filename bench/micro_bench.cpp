// Micro benchmarks (Google Benchmark) of the two inner loops whose cost grows with the capture:
//   BM_dissect  dissect() over generated Ethernet frames (UDP/TCP/ICMP echo, 20–1400 byte payloads);
//               frames/s and bytes/s, and its complexity over the frame count (expected O(N)).
//   BM_match    correlate::match() over the sightings of N generated packets seen at four points, with
//               masquerade rewrites and ~0.1% loss; complexity over the sighting count (expected O(N log N):
//               one sort, then linear passes).
//   BM_analyse  correlate::analyse() on those journeys: flows, rewrites, hop statistics, losses (expected
//               O(N log N): per-hop map lookups keyed by flow and point pair, a sort per hop statistic).
// The inputs come from bench/traffic_model.hpp, the same model the import benchmark writes to pcap files.
// Run: build/bench/hoptrace_micro_bench [--benchmark_filter=BM_match] [--benchmark_repetitions=3]

#include "bench/traffic_model.hpp"
#include "correlate/analysis.hpp"
#include "correlate/matcher.hpp"
#include "tracer/dissect.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <map>
#include <span>
#include <vector>

namespace {

using hoptrace::bench::CapturePoint;
using hoptrace::bench::k_points;

constexpr std::uint64_t k_seed = 1;

// Frames of `packets` generated packets at all four points, in capture-file order (point by point, in time
// order), stored back to back so that the benchmark loop reads memory the way an import does.
struct FrameSet {
    std::vector<std::uint8_t> bytes;
    std::vector<hoptrace::Frame> frames;
    std::vector<std::uint32_t> point_of;  // capture point index (1-based, like points.id) of each frame
    std::uint64_t total_bytes = 0;
};

FrameSet make_frames(std::uint64_t packets) {
    hoptrace::bench::ModelOptions options;
    options.packets = packets;
    options.seed = k_seed;
    const hoptrace::bench::TrafficModel model(options);
    FrameSet set;
    set.bytes.reserve(model.counts().frame_bytes);
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // offset, length (bytes may still reallocate)
    std::vector<std::int64_t> times;
    std::vector<std::uint8_t> frame;
    for (const CapturePoint point : k_points) {
        for (const auto& s : model.sightings_at(point)) {
            model.build_frame(s.packet, point, frame);
            spans.emplace_back(set.bytes.size(), frame.size());
            times.push_back(s.ts_ns);
            set.point_of.push_back(static_cast<std::uint32_t>(point) + 1);
            set.bytes.insert(set.bytes.end(), frame.begin(), frame.end());
        }
    }
    set.frames.reserve(spans.size());
    for (std::size_t i = 0; i < spans.size(); ++i) {
        hoptrace::Frame f;
        f.ts_ns = times[i];
        f.wire_len = static_cast<std::uint32_t>(spans[i].second);
        f.link_type = hoptrace::LinkType::ethernet;
        f.bytes = std::span<const std::uint8_t>(set.bytes.data() + spans[i].first, spans[i].second);
        set.frames.push_back(f);
    }
    set.total_bytes = set.bytes.size();
    return set;
}

// What correlate::run() loads from the store for one packet row (see correlate/correlate.cpp).
hoptrace::correlate::Sighting to_sighting(const hoptrace::PacketRecord& r, std::int64_t packet_id) {
    hoptrace::correlate::Sighting s;
    s.packet_id = packet_id;
    s.ts_ns = r.ts_ns;
    s.fingerprint = r.fingerprint;
    s.point = r.point_id;
    s.flags = r.flags;
    s.tuple.proto = r.proto;
    s.tuple.src = r.src;
    s.tuple.dst = r.dst;
    s.icmp_type = r.icmp_type;
    s.icmp_code = r.icmp_code;
    if (s.tuple.is_icmp()) {
        const bool echo = (r.proto == 1 && (r.icmp_type == 0 || r.icmp_type == 8)) ||
                          (r.proto == 58 && (r.icmp_type == 128 || r.icmp_type == 129));
        s.tuple.sport = echo ? r.icmp_id : 0;
    } else {
        s.tuple.sport = r.sport;
        s.tuple.dport = r.dport;
    }
    if ((r.flags & hoptrace::packet_flag::k_icmp_error) != 0 && r.inner_ip_version != 0) {
        s.inner.proto = r.inner_proto;
        s.inner.src = r.inner_src;
        s.inner.dst = r.inner_dst;
        s.inner.sport = r.inner_sport;
        s.inner.dport = s.inner.is_icmp() ? 0 : r.inner_dport;
    }
    // The fields the matcher and the analysis read beyond the tuple, as correlate.cpp's load() fills them. The
    // TTL matters most: the matcher takes a rewrite only on a step where the TTL drops (a routed step), so
    // sightings left at TTL 0 would split every masqueraded packet into two journeys at the uplink.
    s.ttl = r.ttl;
    s.tcp_flags = r.tcp_flags;
    s.ip_id = r.ip_id;
    s.seq = r.proto == 6 ? r.tcp_seq : r.icmp_seq;
    s.ack = r.proto == 6 ? r.tcp_ack : 0;
    s.payload_len = r.payload_len;
    s.ip_len = r.ip_len;
    s.frag_offset = r.frag_offset;
    s.icmp_mtu = r.icmp_mtu;
    s.dont_fragment = s.tuple.src.family == 6 || (r.flags & hoptrace::packet_flag::k_dont_fragment) != 0;
    return s;
}

// Inputs are costly to build and identical across repetitions: build each size once.
const FrameSet& frames_for(std::uint64_t packets) {
    static std::map<std::uint64_t, FrameSet> cache;
    auto it = cache.find(packets);
    if (it == cache.end()) it = cache.emplace(packets, make_frames(packets)).first;
    return it->second;
}

const std::vector<hoptrace::correlate::Sighting>& sightings_for(std::uint64_t packets) {
    static std::map<std::uint64_t, std::vector<hoptrace::correlate::Sighting>> cache;
    auto it = cache.find(packets);
    if (it != cache.end()) return it->second;
    const FrameSet& set = frames_for(packets);
    std::vector<hoptrace::correlate::Sighting> sightings;
    sightings.reserve(set.frames.size());
    for (std::size_t i = 0; i < set.frames.size(); ++i) {
        hoptrace::PacketRecord r = hoptrace::dissect(set.frames[i]);
        r.point_id = set.point_of[i];
        sightings.push_back(to_sighting(r, static_cast<std::int64_t>(i + 1)));
    }
    return cache.emplace(packets, std::move(sightings)).first->second;
}

void BM_dissect(benchmark::State& state) {
    const FrameSet& set = frames_for(static_cast<std::uint64_t>(state.range(0)));
    std::uint64_t checksum = 0;
    for (auto _ : state) {
        for (const hoptrace::Frame& f : set.frames) {
            const hoptrace::PacketRecord r = hoptrace::dissect(f);
            checksum += r.fingerprint;
        }
        benchmark::DoNotOptimize(checksum);
    }
    const auto n = static_cast<std::int64_t>(set.frames.size());
    state.SetItemsProcessed(state.iterations() * n);
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(set.total_bytes));
    state.SetComplexityN(n);
    state.counters["frames"] = static_cast<double>(n);
}
// 4k, 16k and 64k packets: 16k to 256k frames, 10 to 160 MB. The largest no longer fits in the caches, which
// shows as a higher cost per frame: memory bandwidth, not the algorithm (dissect() looks at one frame at a time).
BENCHMARK(BM_dissect)->RangeMultiplier(4)->Range(4096, 65536)->Unit(benchmark::kMillisecond)->Complexity();

void BM_match(benchmark::State& state) {
    const auto& sightings = sightings_for(static_cast<std::uint64_t>(state.range(0)));
    std::size_t journeys = 0;
    for (auto _ : state) {
        const auto result = hoptrace::correlate::match(sightings);
        journeys = result.count();
        benchmark::DoNotOptimize(result.members.data());
    }
    const auto n = static_cast<std::int64_t>(sightings.size());
    state.SetItemsProcessed(state.iterations() * n);
    state.SetComplexityN(n);
    state.counters["sightings"] = static_cast<double>(n);
    // Every generated packet is one journey: a quick check that the benchmark measures real matching.
    state.counters["journeys_per_packet"] = static_cast<double>(journeys) / static_cast<double>(state.range(0));
}
// 15 625, 62 500 and 250 000 packets: about 62 k, 250 k and a million sightings.
BENCHMARK(BM_match)->Arg(15'625)->Arg(62'500)->Arg(250'000)->Unit(benchmark::kMillisecond)->Complexity();

// A flood of one shape: N datagrams with one fingerprint (IPv6-like: no IP id, one length, one payload), each from
// its own port, 10 µs apart — so with the 100 ms hop gap up to 10 000 journeys of one group are open at once —
// crossing c1 eth0, its veth, docker0 and the uplink, masqueraded keeping the port. The case a cap on the
// candidates used to keep linear; the index must keep it so.
std::vector<hoptrace::correlate::Sighting> flood(std::uint64_t packets) {
    using hoptrace::correlate::Sighting;
    using hoptrace::correlate::Tuple;
    const auto ip = [](const char* text) { return hoptrace::IpAddr::parse(text).value(); };
    const hoptrace::IpAddr inside = ip("fd00:17::2");
    const hoptrace::IpAddr outside = ip("fd00:43::116");
    const hoptrace::IpAddr server = ip("fd00:100::10");
    std::vector<Sighting> out;
    out.reserve(packets * 4);
    for (std::uint64_t p = 0; p < packets; ++p) {
        const auto port = static_cast<std::uint16_t>(1024 + p % 60000);
        const auto t = static_cast<std::int64_t>(p) * 10'000;
        const std::array<std::tuple<std::uint32_t, std::int64_t, hoptrace::IpAddr, std::uint8_t>, 4> seen{
            {{1, t, inside, 64}, {2, t + 1'000, inside, 64}, {3, t + 1'000, inside, 64}, {4, t + 40'000, outside, 63}}};
        for (const auto& [point, ts, src, ttl] : seen) {
            Sighting s;
            s.packet_id = static_cast<std::int64_t>(out.size() + 1);
            s.point = point;
            s.ts_ns = ts;
            s.fingerprint = 42;
            s.ttl = ttl;
            s.tuple = Tuple{17, src, server, port, 7000};
            out.push_back(s);
        }
    }
    return out;
}

void BM_match_flood(benchmark::State& state) {
    const auto sightings = flood(static_cast<std::uint64_t>(state.range(0)));
    hoptrace::correlate::MatchOptions options;
    options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 3}};
    options.container_points = {1};
    std::size_t journeys = 0;
    for (auto _ : state) {
        const auto result = hoptrace::correlate::match(sightings, options);
        journeys = result.count();
        benchmark::DoNotOptimize(result.members.data());
    }
    const auto n = static_cast<std::int64_t>(sightings.size());
    state.SetItemsProcessed(state.iterations() * n);
    state.SetComplexityN(n);
    state.counters["journeys_per_packet"] = static_cast<double>(journeys) / static_cast<double>(state.range(0));
}
BENCHMARK(BM_match_flood)->Arg(5'000)->Arg(20'000)->Arg(80'000)->Unit(benchmark::kMillisecond)->Complexity();

void BM_analyse(benchmark::State& state) {
    const auto& sightings = sightings_for(static_cast<std::uint64_t>(state.range(0)));
    const hoptrace::correlate::Journeys matched = hoptrace::correlate::match(sightings);
    std::size_t flows = 0;
    for (auto _ : state) {
        // analyse() takes the journeys by reference and may renumber them: give it a fresh copy each time
        // (a copy of two integer vectors, well under 1% of the iteration).
        hoptrace::correlate::Journeys journeys = matched;
        const auto analysis = hoptrace::correlate::analyse(sightings, journeys);
        flows = analysis.flows.size();
        benchmark::DoNotOptimize(analysis.hops.data());
    }
    const auto n = static_cast<std::int64_t>(sightings.size());
    state.SetItemsProcessed(state.iterations() * n);
    state.SetComplexityN(n);
    state.counters["sightings"] = static_cast<double>(n);
    state.counters["flows"] = static_cast<double>(flows);
}
BENCHMARK(BM_analyse)->Arg(15'625)->Arg(62'500)->Arg(250'000)->Unit(benchmark::kMillisecond)->Complexity();

}  // namespace

BENCHMARK_MAIN();
