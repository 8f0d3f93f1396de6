#pragma once
// A synthetic but realistic container path: N distinct packets, each seen at four capture points
// (container eth0 → host veth → bridge docker0 → uplink, or the reverse for replies), with the rewrites
// masquerade makes at the uplink. Used by the generator (pcap files for `hoptrace import` and tcpdump) and
// by the micro benchmarks (frames for dissect()). Deterministic for a seed: the same (packets, seed) gives
// the same bytes on every machine (own PRNG, no std:: distributions, whose output is
// implementation-defined).

#include <array>
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace hoptrace::bench {

// The four capture points in forward path order (a reply crosses them in the opposite order).
enum class CapturePoint : std::uint8_t { container = 0, veth = 1, bridge = 2, uplink = 3 };
inline constexpr std::size_t k_point_count = 4;
inline constexpr std::array<CapturePoint, k_point_count> k_points{CapturePoint::container, CapturePoint::veth,
                                                                  CapturePoint::bridge, CapturePoint::uplink};

// The file each point is written to: c-eth0.pcap, veth.pcap, docker0.pcap, uplink.pcap.
std::string_view file_name(CapturePoint point) noexcept;

struct ModelOptions {
    std::uint64_t packets = 250'000;  // distinct packets; each is seen at up to four points
    std::uint64_t seed = 1;
    // Probability that a forward packet is dropped after docker0 (never seen at the uplink). Forward
    // packets are half of all, so the default loses ~0.1% of all packets.
    double forward_loss = 0.002;
    std::int64_t start_ns = 1'700'000'000'000'000'000;  // 2023-11-14, an arbitrary fixed epoch
    std::int64_t mean_gap_ns = 10'000;                  // mean time between packets (100 k packets/s)
};

// One sighting of one packet at one point: when, and which packet.
struct PointSighting {
    std::int64_t ts_ns = 0;
    std::uint32_t packet = 0;
};

struct ModelCounts {
    std::uint64_t packets = 0;
    std::uint64_t sightings = 0;  // frames over all four files
    std::uint64_t lost = 0;       // packets missing at the uplink
    std::uint64_t udp = 0;
    std::uint64_t tcp = 0;
    std::uint64_t icmp = 0;
    std::uint64_t replies = 0;
    std::uint64_t flows = 0;
    std::uint64_t translated_flows = 0;  // flows whose source port / echo id masquerade rewrites
    std::uint64_t frame_bytes = 0;       // total bytes of all frames written
};

// A conversation between one container address and one server (what conntrack would call a connection).
struct ModelFlow {
    std::uint8_t proto = 0;  // 1 (ICMP echo), 6 (TCP) or 17 (UDP)
    std::array<std::uint8_t, 4> container{};
    std::array<std::uint8_t, 4> server{};
    std::uint16_t sport = 0;      // container side source port; ICMP: the echo id
    std::uint16_t dport = 0;      // server port; 0 for ICMP
    std::uint16_t nat_sport = 0;  // source port / echo id after masquerade (== sport when kept)
    std::uint8_t server_ttl = 0;  // TTL replies arrive with at the uplink
};

// One packet as its sender emitted it, plus when it crossed each hop.
struct ModelPacket {
    std::int64_t first_ns = 0;              // at the first point of its path
    std::array<std::uint32_t, 3> hop_ns{};  // latency of each hop, in path order
    std::uint32_t flow = 0;
    std::uint32_t payload_key = 0;  // selects the payload bytes (an echo reply repeats its request's)
    std::uint32_t tcp_seq = 0;
    std::uint32_t tcp_ack = 0;
    std::uint16_t ip_id = 0;
    std::uint16_t payload_len = 0;
    std::uint16_t icmp_seq = 0;
    std::uint8_t tcp_flags = 0;
    std::uint8_t icmp_type = 0;
    bool reply = false;
    bool lost_at_uplink = false;
};

class TrafficModel {
public:
    explicit TrafficModel(const ModelOptions& options);

    [[nodiscard]] std::size_t packet_count() const noexcept { return m_packets.size(); }
    [[nodiscard]] const ModelCounts& counts() const noexcept { return m_counts; }

    // The packets seen at `point`, in time order (strictly increasing timestamps).
    [[nodiscard]] std::vector<PointSighting> sightings_at(CapturePoint point) const;

    // Builds the Ethernet frame of `packet` as captured at `point` into `out` (resized to fit).
    void build_frame(std::uint32_t packet, CapturePoint point, std::vector<std::uint8_t>& out) const;

private:
    ModelOptions m_options;
    std::vector<ModelFlow> m_flows;
    std::vector<ModelPacket> m_packets;
    ModelCounts m_counts;
};

// Writes the four nanosecond Ethernet pcap files into `dir` (created if missing). Throws std::runtime_error.
ModelCounts write_captures(const std::filesystem::path& dir, const ModelOptions& options);

}  // namespace hoptrace::bench
