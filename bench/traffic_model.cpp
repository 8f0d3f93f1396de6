#include "bench/traffic_model.hpp"
#include "tracer/handles.hpp"

#include <pcap/pcap.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace hoptrace::bench {
namespace {

// The address masquerade puts on forward packets at the uplink (the host's address on its LAN).
constexpr std::array<std::uint8_t, 4> k_host_address{192, 168, 43, 116};
constexpr std::array<std::uint8_t, 6> k_docker0_mac{0x02, 0x42, 0x5e, 0x1a, 0x2b, 0x3c};
constexpr std::array<std::uint8_t, 6> k_uplink_mac{0x3c, 0x22, 0xfb, 0x0a, 0x1b, 0x2c};
constexpr std::array<std::uint8_t, 6> k_router_mac{0xe4, 0x9e, 0x12, 0x34, 0x56, 0x78};

constexpr std::size_t k_ethernet_len = 14;
constexpr std::size_t k_ipv4_len = 20;
constexpr std::size_t k_udp_len = 8;
constexpr std::size_t k_tcp_len = 20;
constexpr std::size_t k_icmp_len = 8;

constexpr std::uint8_t k_tcp_fin = 0x01;
constexpr std::uint8_t k_tcp_syn = 0x02;
constexpr std::uint8_t k_tcp_psh = 0x08;
constexpr std::uint8_t k_tcp_ack = 0x10;

constexpr std::uint8_t k_proto_icmp = 1;
constexpr std::uint8_t k_proto_tcp = 6;
constexpr std::uint8_t k_proto_udp = 17;

constexpr std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// splitmix64: small, fast, and the same sequence everywhere.
class Rng {
public:
    explicit Rng(std::uint64_t seed) noexcept : m_state(seed) {}
    std::uint64_t next() noexcept {
        m_state += 0x9e3779b97f4a7c15ULL;
        std::uint64_t z = m_state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for our n).
    std::uint32_t below(std::uint32_t n) noexcept {
        return static_cast<std::uint32_t>(((next() >> 32) * std::uint64_t{n}) >> 32);
    }
    double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
    bool chance(double p) noexcept { return unit() < p; }

private:
    std::uint64_t m_state;
};

struct FlowState {
    std::uint16_t forward_ip_id = 0;
    std::uint16_t reply_ip_id = 0;
    std::uint32_t client_seq = 0;
    std::uint32_t server_seq = 0;
    bool syn_sent = false;
    bool syn_ack_sent = false;
    bool forward_seen = false;  // masquerade only lets replies in once the container has sent something
    std::uint16_t icmp_seq = 0;
    std::uint32_t pending_request = 0;  // packet index + 1 of an unanswered echo request, 0 for none
};

void put16(std::uint8_t* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}
void put32(std::uint8_t* p, std::uint32_t v) noexcept {
    put16(p, static_cast<std::uint16_t>(v >> 16));
    put16(p + 2, static_cast<std::uint16_t>(v));
}

// One's complement sum of big-endian 16-bit words (RFC 1071), not yet folded or inverted.
std::uint64_t ones_sum(const std::uint8_t* p, std::size_t len, std::uint64_t sum = 0) noexcept {
    for (; len >= 2; p += 2, len -= 2) sum += static_cast<std::uint64_t>((p[0] << 8) | p[1]);
    if (len == 1) sum += static_cast<std::uint64_t>(p[0] << 8);
    return sum;
}
std::uint16_t fold(std::uint64_t sum) noexcept {
    while ((sum >> 16) != 0) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

std::size_t l4_header_len(std::uint8_t proto) noexcept {
    return proto == k_proto_tcp ? k_tcp_len : proto == k_proto_udp ? k_udp_len : k_icmp_len;
}

}  // namespace

std::string_view file_name(CapturePoint point) noexcept {
    switch (point) {
        case CapturePoint::container:
            return "c-eth0.pcap";
        case CapturePoint::veth:
            return "veth.pcap";
        case CapturePoint::bridge:
            return "docker0.pcap";
        case CapturePoint::uplink:
            return "uplink.pcap";
    }
    return "unknown.pcap";
}

TrafficModel::TrafficModel(const ModelOptions& options) : m_options(options) {
    if (options.packets > 0xFFFF'FFF0ULL) throw std::invalid_argument("too many packets for one model");
    Rng rng(mix(options.seed ^ 0x686f70747261636bULL));

    // Flows: a few thousand, split 60/30/10 between UDP, TCP and ICMP like the packets are.
    const auto flow_count = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(options.packets / 16, 3, 3000));
    std::array<std::vector<std::uint32_t>, 3> by_proto;  // UDP, TCP, ICMP flow indexes
    std::unordered_set<std::uint64_t> originals;
    std::unordered_set<std::uint64_t> translated;
    static constexpr std::array<std::uint16_t, 6> k_udp_ports{53, 123, 443, 5353, 51820, 4500};
    static constexpr std::array<std::uint16_t, 6> k_tcp_ports{443, 80, 22, 5432, 6379, 8080};
    m_flows.reserve(flow_count);
    for (std::uint32_t f = 0; f < flow_count; ++f) {
        ModelFlow flow;
        const std::uint32_t kind = f < 3 ? f : (rng.chance(0.6) ? 0 : rng.chance(0.75) ? 1 : 2);
        flow.proto = kind == 0 ? k_proto_udp : kind == 1 ? k_proto_tcp : k_proto_icmp;
        flow.server_ttl = static_cast<std::uint8_t>((rng.chance(0.1) ? 128 : 64) - 3 - rng.below(12));
        for (;;) {
            flow.container = {172, 17, 0, static_cast<std::uint8_t>(2 + rng.below(6))};
            flow.server = {198, 51, 100, static_cast<std::uint8_t>(1 + rng.below(40))};
            if (flow.proto == k_proto_icmp) {
                flow.sport = static_cast<std::uint16_t>(1 + rng.below(0xFFFE));
                flow.dport = 0;
            } else {
                flow.sport = static_cast<std::uint16_t>(32768 + rng.below(28232));
                flow.dport = rng.chance(0.8) ? (flow.proto == k_proto_udp ? k_udp_ports : k_tcp_ports)[rng.below(6)]
                                             : static_cast<std::uint16_t>(10000 + rng.below(50000));
            }
            const std::uint64_t original =
                (std::uint64_t{flow.proto} << 56) | (std::uint64_t{flow.container[3]} << 48) |
                (std::uint64_t{flow.server[3]} << 40) | (std::uint64_t{flow.sport} << 16) | flow.dport;
            if (originals.contains(original)) continue;
            // Masquerade keeps the source port unless it is taken on the outside; we also force a rewrite
            // on a fifth of the flows so that there is plenty of port / echo id rewriting to find.
            flow.nat_sport = flow.sport;
            auto outside = [&] {
                return (std::uint64_t{flow.proto} << 56) | (std::uint64_t{flow.server[3]} << 40) |
                       (std::uint64_t{flow.nat_sport} << 16) | flow.dport;
            };
            bool rewrite = rng.chance(0.2);
            while (rewrite || translated.contains(outside())) {
                flow.nat_sport = static_cast<std::uint16_t>(1024 + rng.below(64511));
                rewrite = flow.nat_sport == flow.sport;
            }
            originals.insert(original);
            translated.insert(outside());
            break;
        }
        if (flow.nat_sport != flow.sport) ++m_counts.translated_flows;
        by_proto[kind].push_back(f);
        m_flows.push_back(flow);
    }
    m_counts.flows = m_flows.size();

    std::vector<FlowState> state(m_flows.size());
    for (auto& s : state) {
        s.forward_ip_id = static_cast<std::uint16_t>(rng.next());
        s.reply_ip_id = static_cast<std::uint16_t>(rng.next());
        s.client_seq = static_cast<std::uint32_t>(rng.next());
        s.server_seq = static_cast<std::uint32_t>(rng.next());
    }

    m_packets.reserve(options.packets);
    std::int64_t now_ns = options.start_ns;
    const auto mean_gap = static_cast<double>(options.mean_gap_ns);
    for (std::uint64_t i = 0; i < options.packets; ++i) {
        ModelPacket p;
        const auto index = static_cast<std::uint32_t>(i);
        // Exponential gaps (a Poisson arrival process), capped so one unlucky draw does not stall the clock.
        now_ns += 1 + static_cast<std::int64_t>(std::min(-std::log1p(-rng.unit()) * mean_gap, 20 * mean_gap));
        p.first_ns = now_ns;

        const double u = rng.unit();
        const std::size_t kind = u < 0.6 ? 0 : u < 0.9 ? 1 : 2;
        const auto& candidates = by_proto[kind];
        const double pick = rng.unit();  // skewed: a few heavy flows, a long tail of light ones
        p.flow = candidates[static_cast<std::size_t>(pick * pick * static_cast<double>(candidates.size()))];
        const ModelFlow& flow = m_flows[p.flow];
        FlowState& s = state[p.flow];
        p.reply = rng.chance(0.5);
        p.payload_key = index;

        if (flow.proto == k_proto_udp) {
            if (!s.forward_seen) p.reply = false;
            p.payload_len = static_cast<std::uint16_t>(20 + rng.below(1381));
            ++m_counts.udp;
        } else if (flow.proto == k_proto_tcp) {
            // The handshake first; then client data segments and server ACKs or data.
            if (!s.syn_sent)
                p.reply = false;
            else if (!s.syn_ack_sent)
                p.reply = true;
            if (!p.reply) {
                if (!s.syn_sent) {
                    p.tcp_flags = k_tcp_syn;
                    p.tcp_seq = s.client_seq++;
                    s.syn_sent = true;
                } else {
                    p.payload_len = static_cast<std::uint16_t>(20 + rng.below(1381));
                    p.tcp_flags = k_tcp_psh | k_tcp_ack | (rng.chance(0.001) ? k_tcp_fin : 0);
                    p.tcp_seq = s.client_seq;
                    p.tcp_ack = s.server_seq;
                    s.client_seq += p.payload_len;
                }
            } else if (!s.syn_ack_sent) {
                p.tcp_flags = k_tcp_syn | k_tcp_ack;
                p.tcp_seq = s.server_seq++;
                p.tcp_ack = s.client_seq;
                s.syn_ack_sent = true;
            } else {
                p.tcp_flags = k_tcp_ack;
                p.tcp_seq = s.server_seq;
                p.tcp_ack = s.client_seq;
                if (rng.chance(0.4)) {
                    p.tcp_flags |= k_tcp_psh;
                    p.payload_len = static_cast<std::uint16_t>(20 + rng.below(1381));
                    s.server_seq += p.payload_len;
                }
            }
            ++m_counts.tcp;
        } else {
            // Echo: a reply answers the latest unanswered request and repeats its payload.
            if (s.pending_request == 0) p.reply = false;
            if (!p.reply) {
                p.icmp_type = 8;
                p.icmp_seq = ++s.icmp_seq;
                p.payload_len = rng.chance(0.8) ? 56 : static_cast<std::uint16_t>(20 + rng.below(1381));
                s.pending_request = index + 1;
            } else {
                const ModelPacket& request = m_packets[s.pending_request - 1];
                p.icmp_type = 0;
                p.icmp_seq = request.icmp_seq;
                p.payload_len = request.payload_len;
                p.payload_key = request.payload_key;
                s.pending_request = 0;
            }
            ++m_counts.icmp;
        }
        p.ip_id = p.reply ? s.reply_ip_id++ : s.forward_ip_id++;
        s.forward_seen = s.forward_seen || !p.reply;

        // Hop latencies in path order. Forward: c-eth0→veth, veth→docker0, docker0→uplink (routing + SNAT).
        // Reply: uplink→docker0 (conntrack de-NAT + routing), docker0→veth, veth→c-eth0.
        if (!p.reply) {
            p.hop_ns = {800 + rng.below(1200), 300 + rng.below(900), 3000 + rng.below(6000)};
        } else {
            p.hop_ns = {4000 + rng.below(8000), 300 + rng.below(900), 1000 + rng.below(2000)};
        }
        if (rng.chance(0.01)) p.hop_ns[rng.below(3)] += 20'000 + rng.below(80'000);  // a scheduling hiccup
        p.lost_at_uplink = !p.reply && rng.chance(options.forward_loss);

        const std::uint64_t seen = p.lost_at_uplink ? 3 : 4;
        m_counts.sightings += seen;
        m_counts.lost += p.lost_at_uplink ? 1 : 0;
        m_counts.replies += p.reply ? 1 : 0;
        m_counts.frame_bytes += seen * (k_ethernet_len + k_ipv4_len + l4_header_len(flow.proto) + p.payload_len);
        m_packets.push_back(p);
    }
    m_counts.packets = m_packets.size();
}

std::vector<PointSighting> TrafficModel::sightings_at(CapturePoint point) const {
    std::vector<PointSighting> out;
    out.reserve(m_packets.size());
    const auto forward_pos = static_cast<std::size_t>(point);
    for (std::size_t i = 0; i < m_packets.size(); ++i) {
        const ModelPacket& p = m_packets[i];
        if (point == CapturePoint::uplink && p.lost_at_uplink) continue;
        const std::size_t pos = p.reply ? k_point_count - 1 - forward_pos : forward_pos;
        std::int64_t ts = p.first_ns;
        for (std::size_t h = 0; h < pos; ++h) ts += p.hop_ns[h];
        out.push_back({ts, static_cast<std::uint32_t>(i)});
    }
    std::sort(out.begin(), out.end(), [](const PointSighting& a, const PointSighting& b) {
        return a.ts_ns != b.ts_ns ? a.ts_ns < b.ts_ns : a.packet < b.packet;
    });
    // A capture point stamps frames in the order it sees them; keep the timestamps strictly increasing.
    for (std::size_t i = 1; i < out.size(); ++i) out[i].ts_ns = std::max(out[i].ts_ns, out[i - 1].ts_ns + 1);
    return out;
}

void TrafficModel::build_frame(std::uint32_t packet, CapturePoint point, std::vector<std::uint8_t>& out) const {
    const ModelPacket& p = m_packets.at(packet);
    const ModelFlow& flow = m_flows[p.flow];
    const bool outside = point == CapturePoint::uplink;  // masquerade's translated side
    const std::size_t l4_len = l4_header_len(flow.proto);
    const std::size_t ip_total = k_ipv4_len + l4_len + p.payload_len;
    out.assign(k_ethernet_len + ip_total, 0);
    std::uint8_t* const eth = out.data();
    std::uint8_t* const ip = eth + k_ethernet_len;
    std::uint8_t* const l4 = ip + k_ipv4_len;
    std::uint8_t* const payload = l4 + l4_len;

    // Ethernet: container MAC as Docker derives it from the address (02:42 + IPv4), docker0's MAC inside;
    // the host's uplink and its router's MAC outside.
    const std::array<std::uint8_t, 6> container_mac{
        0x02, 0x42, flow.container[0], flow.container[1], flow.container[2], flow.container[3]};
    const auto& near_mac = outside ? k_uplink_mac : container_mac;  // the container side of this link
    const auto& far_mac = outside ? k_router_mac : k_docker0_mac;
    std::memcpy(eth, (p.reply ? near_mac : far_mac).data(), 6);
    std::memcpy(eth + 6, (p.reply ? far_mac : near_mac).data(), 6);
    put16(eth + 12, 0x0800);

    // Addresses and ports as this point sees them.
    const auto& local = outside ? k_host_address : flow.container;
    const std::uint16_t local_port = outside ? flow.nat_sport : flow.sport;
    const auto& src = p.reply ? flow.server : local;
    const auto& dst = p.reply ? local : flow.server;
    // Forward packets leave the container with TTL 64 and lose one when the host routes them out of the
    // uplink; replies lose one when routed from the uplink to docker0.
    std::uint8_t ttl = 64;
    if (!p.reply && outside) ttl = 63;
    if (p.reply) ttl = outside ? flow.server_ttl : static_cast<std::uint8_t>(flow.server_ttl - 1);

    ip[0] = 0x45;
    put16(ip + 2, static_cast<std::uint16_t>(ip_total));
    put16(ip + 4, p.ip_id);
    put16(ip + 6, flow.proto == k_proto_icmp ? 0 : 0x4000);  // DF on TCP and UDP, as Linux sockets do
    ip[8] = ttl;
    ip[9] = flow.proto;
    std::memcpy(ip + 12, src.data(), 4);
    std::memcpy(ip + 16, dst.data(), 4);
    put16(ip + 10, fold(ones_sum(ip, k_ipv4_len)));

    // Payload: the packet's number, then bytes drawn from a stream keyed by (seed, payload key).
    Rng bytes(mix(m_options.seed * 0x2545F4914F6CDD1DULL + p.payload_key));
    for (std::size_t off = 0; off < p.payload_len; off += 8) {
        std::uint64_t word = off == 0 ? (std::uint64_t{p.payload_key} << 32) | 0x68747263U : bytes.next();
        for (std::size_t b = 0; b < 8 && off + b < p.payload_len; ++b, word >>= 8) {
            payload[off + b] = static_cast<std::uint8_t>(word);
        }
    }

    const std::size_t l4_total = l4_len + p.payload_len;
    std::uint8_t pseudo[12];
    std::memcpy(pseudo, src.data(), 4);
    std::memcpy(pseudo + 4, dst.data(), 4);
    pseudo[8] = 0;
    pseudo[9] = flow.proto;
    put16(pseudo + 10, static_cast<std::uint16_t>(l4_total));
    const std::uint16_t sport = p.reply ? flow.dport : local_port;
    const std::uint16_t dport = p.reply ? local_port : flow.dport;
    if (flow.proto == k_proto_udp) {
        put16(l4, sport);
        put16(l4 + 2, dport);
        put16(l4 + 4, static_cast<std::uint16_t>(l4_total));
        std::uint16_t sum = fold(ones_sum(l4, l4_total, ones_sum(pseudo, sizeof pseudo)));
        put16(l4 + 6, sum == 0 ? 0xFFFF : sum);
    } else if (flow.proto == k_proto_tcp) {
        put16(l4, sport);
        put16(l4 + 2, dport);
        put32(l4 + 4, p.tcp_seq);
        put32(l4 + 8, p.tcp_ack);
        l4[12] = 5 << 4;
        l4[13] = p.tcp_flags;
        put16(l4 + 14, (p.tcp_flags & k_tcp_syn) != 0 ? 64240 : p.reply ? 509 : 501);
        put16(l4 + 16, fold(ones_sum(l4, l4_total, ones_sum(pseudo, sizeof pseudo))));
    } else {
        l4[0] = p.icmp_type;
        put16(l4 + 4, local_port);  // the echo id: masquerade rewrites it like a source port
        put16(l4 + 6, p.icmp_seq);
        put16(l4 + 2, fold(ones_sum(l4, l4_total)));
    }
}

namespace {
}  // namespace

ModelCounts write_captures(const std::filesystem::path& dir, const ModelOptions& options) {
    std::filesystem::create_directories(dir);
    const TrafficModel model(options);
    std::vector<std::uint8_t> frame;
    for (const CapturePoint point : k_points) {
        const std::filesystem::path path = dir / file_name(point);
        const PcapPtr dead(
            pcap_open_dead_with_tstamp_precision(DLT_EN10MB, 65535, PCAP_TSTAMP_PRECISION_NANO));
        if (!dead) throw std::runtime_error("pcap_open_dead failed");
        PcapDumperPtr dumper(pcap_dump_open(dead.get(), path.c_str()));
        if (!dumper) throw std::runtime_error(path.string() + ": " + pcap_geterr(dead.get()));
        for (const PointSighting& s : model.sightings_at(point)) {
            model.build_frame(s.packet, point, frame);
            pcap_pkthdr header{};
            header.ts.tv_sec = static_cast<time_t>(s.ts_ns / 1'000'000'000);
            header.ts.tv_usec = static_cast<suseconds_t>(s.ts_ns % 1'000'000'000);  // nanoseconds: NANO dumper
            header.caplen = static_cast<bpf_u_int32>(frame.size());
            header.len = header.caplen;
            pcap_dump(reinterpret_cast<u_char*>(dumper.get()), &header, frame.data());
        }
        if (pcap_dump_flush(dumper.get()) != 0) throw std::runtime_error(path.string() + ": write failed");
        // pcap_dump_close() reports no error; the flush above did the last write we can check.
    }
    return model.counts();
}

}  // namespace hoptrace::bench
