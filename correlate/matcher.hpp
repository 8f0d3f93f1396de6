#pragma once
// The matcher: which sightings are the same packet seen at different points (a journey).
// Pure computation over in-memory sightings; correlate.cpp loads them from and writes journeys to the store.

#include "correlate/tuple.hpp"

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace hoptrace::correlate {

// One packet seen at one point (a row of `packets`, reduced to what matching needs).
struct Sighting {
    std::int64_t packet_id = 0;
    std::int64_t ts_ns = 0;
    std::uint64_t fingerprint = 0;
    std::uint32_t point = 0;  // points.id
    std::uint32_t flags = 0;  // packet_flag bits
    Tuple tuple;
    std::uint8_t icmp_type = 0;  // for ICMP(v6) packets
    std::uint8_t icmp_code = 0;
    std::uint8_t ttl = 0;  // IPv4 TTL or IPv6 hop limit: unchanged when a bridge switches the frame
    Tuple inner;           // ICMP errors: the quoted packet's tuple (proto 0 when none)
    // What ties journeys to each other (analysis: answers, repeats): fields NAT leaves alone.
    std::uint8_t tcp_flags = 0;
    std::uint16_t ip_id = 0;        // IPv4 only
    std::uint32_t seq = 0;          // TCP sequence number, or ICMP echo sequence
    std::uint32_t ack = 0;          // TCP acknowledgement number
    std::uint32_t payload_len = 0;  // transport payload bytes per the headers
    std::uint32_t inner_seq = 0;    // ICMP errors: the quoted TCP or echo sequence, when has_inner_seq
    std::uint16_t inner_ip_id = 0;  // ICMP errors: the quoted IPv4 identification, when has_inner_ip_id
    std::uint32_t ip_len = 0;       // IP total length (what a path MTU limits)
    std::uint16_t frag_offset = 0;  // IP fragment offset in bytes (flags say whether it is a fragment)
    std::uint32_t icmp_mtu = 0;     // next-hop MTU of frag-needed / packet-too-big, else 0
    bool dont_fragment = false;     // IPv4 DF (IPv6 never fragments on the way: always true there)
    // Its ports are a guess: a later fragment takes them from its datagram's first fragment, and another datagram
    // with the same addresses, protocol and IP id was as near. The matcher then compares addresses only (and flags
    // the journeys when that leaves more than one).
    bool uncertain = false;
    bool has_inner_seq = false;
    bool has_inner_ip_id = false;
};

// What kind of ICMP or ICMPv6 message a sighting is.
inline bool is_echo_request(const Sighting& s) noexcept {
    return (s.tuple.proto == 1 && s.icmp_type == 8) || (s.tuple.proto == 58 && s.icmp_type == 128);
}
inline bool is_echo_reply(const Sighting& s) noexcept {
    return (s.tuple.proto == 1 && s.icmp_type == 0) || (s.tuple.proto == 58 && s.icmp_type == 129);
}
inline bool is_time_exceeded(const Sighting& s) noexcept {
    return (s.tuple.proto == 1 && s.icmp_type == 11) || (s.tuple.proto == 58 && s.icmp_type == 3);
}

struct MatchOptions {
    // Two consecutive sightings of one journey are at most this far apart. A packet crosses a host in
    // micro- to milliseconds; TCP's minimum retransmission timeout (200 ms) is well above, so a
    // retransmission never extends the journey of the segment it repeats.
    std::int64_t max_hop_gap_ns = 100'000'000;
    // Points that are a container's own interface (role container). A packet seen at one container's
    // interface and then at another's crossed no router: its tuple cannot have been rewritten in between.
    std::unordered_set<std::uint32_t> container_points;
    // Where each point sits by its role (container 0, veth 1, bridge 2, uplink 3; absent = other, 4): breaks
    // ties when the timestamps cannot order two points (microsecond captures of sub-microsecond hops).
    std::unordered_map<std::uint32_t, int> role_rank;
    // When a live capture started and stopped (0 = unknown, e.g. imported files): every point captured the
    // whole window.
    std::int64_t capture_start_ns = 0;
    std::int64_t capture_stop_ns = 0;
    // NAT translations the kernel reported (conntrack entries of a live capture): original tuple -> translated.
    std::vector<std::pair<Tuple, Tuple>> known_translations;
    // Points that hold several interfaces' copies of one packet without saying which (tcpdump -i any in Linux
    // cooked v1): the same packet seen again there is a copy, not a duplicate.
    std::unordered_set<std::uint32_t> merged_points;
    // Networks behind the bridges (live captures: the bridges' addresses, "172.17.0.1/16"): traffic to them stays
    // inside the host, so it is not expected at the uplink.
    std::vector<std::pair<IpAddr, int>> inside_networks;
    // Each point's first and last packet of any kind (ARP too): when an imported point was capturing. A point
    // missing here is taken to have captured while the others did.
    std::unordered_map<std::uint32_t, std::pair<std::int64_t, std::int64_t>> point_windows;
};

// Journeys in compressed form: journey j's sightings (indexes into the input span, in time order) are
// members[offsets[j] .. offsets[j + 1]). Journeys are numbered by their first sighting's time (then
// fingerprint), so the result does not depend on the input order.
struct Journeys {
    std::vector<std::uint32_t> offsets;  // size() == count() + 1
    std::vector<std::uint32_t> members;
    // Per journey: 1 when one of its sightings could have continued another journey just as well (a different
    // origin, nothing to tell them apart), so which one it joined was not decided by the evidence. Filled by
    // match(); empty means none.
    std::vector<std::uint8_t> ambiguous;

    [[nodiscard]] std::size_t count() const noexcept { return offsets.empty() ? 0 : offsets.size() - 1; }
    [[nodiscard]] std::span<const std::uint32_t> of(std::size_t j) const noexcept {
        return {members.data() + offsets[j], members.data() + offsets[j + 1]};
    }
};

// Groups sightings by fingerprint and, inside a group, assigns each sighting (in time order; equal times by TTL,
// then role) to an open journey of that group that (1) has no sighting at this point yet, (2) saw the packet at
// most max_hop_gap_ns earlier, (3) stays a walk along the topology with it (roles: outward container → veth →
// bridge → uplink, inward, or container to container across a bridge; never back in from the uplink), (4) never
// gains TTL, and (5) is consistent with the tuples: the learned translation (conntrack, unambiguous groups), or
// the same tuple (an L2 step keeps the TTL, a routed one drops it), or one NAT step on a routed step (the TTL
// drops; ports kept preferred to ports rewritten) — in that order of preference. Among equally good journeys of
// one origin (last point and tuple) the first to get there wins; equally good journeys of different origins
// make the choice undecidable: the oldest takes the sighting and all of them are flagged (Journeys::ambiguous).
// No bound on the candidates: open journeys are indexed by their latest tuple. A sighting with no such journey
// starts one. Every sighting with fingerprint != 0 ends up in exactly one journey; fingerprint 0 (not IP) none.
Journeys match(std::span<const Sighting> sightings, const MatchOptions& options = {});

}  // namespace hoptrace::correlate
