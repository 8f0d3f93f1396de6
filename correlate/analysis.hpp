#pragma once
// From journeys to what a person asks about: flows (original and translated tuple), the direction of each
// journey, NAT rewrites, hop latency statistics, losses, and the order of the points along the path.
// Pure computation; correlate.cpp persists the result.

#include "correlate/matcher.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hoptrace::correlate {

enum class FlowDirection : std::uint8_t { forward, reply };
const char* to_string(FlowDirection d) noexcept;

// A flow is the conntrack-like pair of tuples: as the initiator sent it (original) and as it left the last
// point after NAT (translated). `forward` is the direction of the flow's first journey.
struct Flow {
    Tuple original;
    Tuple translated;
    std::uint64_t packets = 0;  // sightings
    std::uint64_t journeys = 0;
    std::int64_t first_ts_ns = 0;
    std::int64_t last_ts_ns = 0;
};

// How a journey is tied to an earlier one (JourneyInfo::related).
enum class Relation : std::uint8_t {
    none,
    answers,        // an ICMP error to the probe it quotes; an echo reply to its request; a SYN-ACK/RST to its SYN
    repeats,        // a TCP retransmission (same flow, direction and sequence number) or a duplicated packet
    segment_of,     // one of the MTU-sized segments a GSO/TSO super-packet was cut into on its way
    fragment_of,    // an IP fragment after the first -> the journey of its datagram's first fragment
    reassembly_of,  // the datagram a host reassembled (br_netfilter, conntrack) -> its first fragment's journey
    copy_of,        // the same packet again at a point that merges interfaces (tcpdump -i any, cooked v1)
};
const char* to_string(Relation r) noexcept;  // "" for none

struct JourneyInfo {
    std::uint32_t flow = 0;  // index into Analysis::flows
    FlowDirection direction = FlowDirection::forward;
    bool icmp_error = false;  // an ICMP error, tied to the flow of the probe it quotes
    Relation relation = Relation::none;
    std::uint32_t related = 0;  // the journey (index) it answers / repeats / is a segment of
    // The loss (index into Analysis::losses) this journey is one of; a fragmented datagram's is on its first
    // fragment's journey.
    std::optional<std::uint32_t> loss;
};

struct Rewrite {
    std::uint32_t flow = 0;
    FlowDirection direction = FlowDirection::forward;
    unsigned field = 0;  // a correlate::field bit
    std::string from;
    std::string to;
    std::uint32_t from_point = 0;
    std::uint32_t to_point = 0;
    std::uint64_t packets = 0;  // journeys that showed it
};

struct HopStats {
    std::optional<std::uint32_t> flow;  // nullopt: all flows together
    FlowDirection direction = FlowDirection::forward;
    std::uint32_t from_point = 0;
    std::uint32_t to_point = 0;
    std::uint64_t count = 0;
    std::int64_t min_ns = 0;
    std::int64_t p50_ns = 0;
    std::int64_t p90_ns = 0;
    std::int64_t p99_ns = 0;
    std::int64_t max_ns = 0;
};

// Why a journey ended early: nothing explains it (dropped), or an ICMP error answered it — time exceeded
// (expired: a TTL ran out, as traceroute intends) or any other error (rejected: unreachable, too big …).
enum class LossCause : std::uint8_t { dropped, expired, rejected };
const char* to_string(LossCause c) noexcept;

struct Loss {
    std::uint32_t flow = 0;
    FlowDirection direction = FlowDirection::forward;
    std::uint32_t after_point = 0;
    std::uint32_t expected_point = 0;
    std::uint64_t count = 0;
    LossCause cause = LossCause::dropped;
    // An ICMP error (the journey, an index) that died on its way back to the probe's sender; nullopt for a loss of
    // the flow's own packets.
    std::optional<std::uint32_t> icmp_error;
    // The ICMP error journey that explains a rejected/expired loss (one of them), when any.
    std::optional<std::uint32_t> evidence;
    // Of `count`, the packets lost while nothing shows the expected point was capturing (imported files: before its
    // first packet or after its last, while the other files were capturing).
    std::uint64_t outside_window = 0;
};

struct Analysis {
    std::vector<Flow> flows;
    std::vector<JourneyInfo> journeys;      // parallel to the Journeys given
    std::vector<std::uint32_t> path_order;  // point ids, innermost (where flows start) first
    std::vector<Rewrite> rewrites;
    std::vector<HopStats> hops;
    std::vector<Loss> losses;
    // Sightings that saw a journey without being a point on its path, parallel to the journeys (observers.of(j)
    // for journey j): a bridge's own tap seeing a frame it switched from one port to another (container to
    // container on one bridge). They are no hop: excluded from hops, rewrites, losses and the time order of
    // the journey; they count as sightings of the journey and its flow.
    Journeys observers;
};

// Nearest-rank percentile of sorted samples: the smallest sample with at least p% of samples <= it.
std::int64_t percentile(std::span<const std::int64_t> sorted, double p) noexcept;

// `journeys` may be reordered internally when two sightings carry the same timestamp (microsecond captures):
// ties are put in path order for the journey's direction, so hops never run backwards. Observer sightings
// (Analysis::observers) are moved out of `journeys`: afterwards each journey holds only the points of its path.
Analysis analyse(std::span<const Sighting> sightings, Journeys& journeys, const MatchOptions& options = {});

}  // namespace hoptrace::correlate
