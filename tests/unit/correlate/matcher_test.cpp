// The matcher's rules on hand-built sightings: collisions of the fingerprint must never make a false
// journey. (Real captures are matched in correlate_test.cpp; here each rule gets a minimal case.)

#include "correlate/analysis.hpp"
#include "correlate/matcher.hpp"
#include "tracer/packet.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <map>
#include <set>

namespace hoptrace::correlate {
namespace {

IpAddr ip(const char* text) { return IpAddr::parse(text).value(); }

Tuple udp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport) {
    return Tuple{17, ip(src), ip(dst), sport, dport};
}

// Points: 1 c1 eth0, 2 c1 veth, 3 docker0, 4 uplink, 5 c2 eth0, 6 c2 veth.
// The TTL a packet has there, as the lab's kernel sets it: 64 when sent, one less after the host routed it
// (between docker0 and the uplink). Outward packets go to an outside address, inward ones to a container or to
// the host's own address.
std::uint8_t ttl_at(std::uint32_t point, const Tuple& t) {
    const std::string dst = t.dst.to_string();
    const bool inward = dst.starts_with("172.17.") || dst.starts_with("192.168.43.");
    const bool uplink = point == 4;
    return uplink == inward ? 64 : 63;
}

struct Builder {
    std::vector<Sighting> sightings;
    std::int64_t next_id = 1;
    std::size_t add(std::uint32_t point, std::int64_t ts_ns, std::uint64_t fp, const Tuple& t) {
        Sighting s;
        s.packet_id = next_id++;
        s.point = point;
        s.ts_ns = ts_ns;
        s.fingerprint = fp;
        s.tuple = t;
        s.ttl = ttl_at(point, t);
        sightings.push_back(s);
        return sightings.size() - 1;
    }
};

// The set of packet ids of the journey that contains sighting `index`.
std::set<std::int64_t> journey_with(const std::vector<Sighting>& s, const Journeys& j, std::size_t index) {
    for (std::size_t k = 0; k < j.count(); ++k) {
        auto m = j.of(k);
        if (std::find(m.begin(), m.end(), index) != m.end()) {
            std::set<std::int64_t> ids;
            for (auto i : m) ids.insert(s[i].packet_id);
            return ids;
        }
    }
    return {};
}

const Tuple k_c1 = udp("172.17.0.2", 40000, "198.51.100.10", 5353);
const Tuple k_c1_nat = udp("192.168.43.116", 40000, "198.51.100.10", 5353);
const Tuple k_c2 = udp("172.17.0.3", 40000, "198.51.100.10", 5353);
const Tuple k_c2_nat = udp("192.168.43.116", 1025, "198.51.100.10", 5353);

TEST(Matcher, one_packet_at_four_points_is_one_journey_in_time_order) {
    Builder b;
    b.add(4, 4000, 77, k_c1_nat);
    b.add(1, 1000, 77, k_c1);
    b.add(3, 3000, 77, k_c1);
    b.add(2, 2000, 77, k_c1);
    const Journeys j = match(b.sightings);
    ASSERT_EQ(j.count(), 1U);
    std::vector<std::uint32_t> points;
    for (auto i : j.of(0)) points.push_back(b.sightings[i].point);
    EXPECT_EQ(points, (std::vector<std::uint32_t>{1, 2, 3, 4}));
}

TEST(Matcher, two_containers_with_the_same_fingerprint_are_told_apart_by_their_translation) {
    Builder b;
    // Distinct packets first: they teach the matcher each flow's masquerade translation.
    b.add(1, 1000, 1, k_c1), b.add(2, 1100, 1, k_c1), b.add(3, 1200, 1, k_c1), b.add(4, 1300, 1, k_c1_nat);
    b.add(5, 2000, 2, k_c2), b.add(6, 2100, 2, k_c2), b.add(3, 2200, 2, k_c2), b.add(4, 2300, 2, k_c2_nat);
    // Then both send a packet with the same fingerprint; c2's reaches docker0 first but leaves the
    // uplink second, so first-in-first-out alone would pair them wrongly.
    const auto c2_docker = b.add(3, 5000, 9, k_c2);
    const auto c1_docker = b.add(3, 5050, 9, k_c1);
    b.add(5, 4800, 9, k_c2), b.add(6, 4900, 9, k_c2);
    b.add(1, 4850, 9, k_c1), b.add(2, 4950, 9, k_c1);
    const auto c1_uplink = b.add(4, 5100, 9, k_c1_nat);
    const auto c2_uplink = b.add(4, 5200, 9, k_c2_nat);

    const Journeys j = match(b.sightings);
    const auto c1 = journey_with(b.sightings, j, c1_docker);
    const auto c2 = journey_with(b.sightings, j, c2_docker);
    EXPECT_EQ(c1.size(), 4U);
    EXPECT_EQ(c2.size(), 4U);
    EXPECT_TRUE(c1.contains(b.sightings[c1_uplink].packet_id));
    EXPECT_TRUE(c2.contains(b.sightings[c2_uplink].packet_id));
}

TEST(Matcher, identical_heartbeats_of_two_containers_never_join_across_containers) {
    // UDP from unconnected sockets goes out with IP id 0 and DF: two containers sending the same heartbeat
    // produce the same fingerprint. Nothing can be learned from such groups; the container roles must keep
    // a c1 sighting from continuing at c2's interface (which would invent a src rewrite between them).
    Builder b;
    MatchOptions options;
    options.container_points = {1, 5};
    for (int n = 0; n < 5; ++n) {
        const std::int64_t t = n * 1'000'000'000LL;
        b.add(1, t, 42, k_c1);                  // c1 eth0
        b.add(5, t + 1'000, 42, k_c2);          // c2 eth0, 1 µs later
        b.add(4, t + 50'000, 42, k_c1_nat);     // uplink
        b.add(4, t + 51'000, 42, k_c2_nat);
    }
    const Journeys j = match(b.sightings, options);
    for (std::size_t k = 0; k < j.count(); ++k) {
        std::set<std::uint32_t> points;
        for (auto i : j.of(k)) points.insert(b.sightings[i].point);
        EXPECT_FALSE(points.contains(1) && points.contains(5)) << "journey " << k << " joins c1 and c2";
    }
}

// The lab's roles: 1 c1 eth0, 5 c2 eth0 containers; 2, 6 their veths; 3 docker0; 4 the uplink.
MatchOptions lab_roles() {
    MatchOptions options;
    options.role_rank = {{1, 0}, {5, 0}, {2, 1}, {6, 1}, {3, 2}, {4, 3}};
    options.container_points = {1, 5};
    return options;
}

std::set<std::uint32_t> points_of(const std::vector<Sighting>& s, const Journeys& j, std::size_t k) {
    std::set<std::uint32_t> points;
    for (auto i : j.of(k)) points.insert(s[i].point);
    return points;
}

TEST(Matcher, identical_datagrams_of_two_containers_20_ms_apart_are_two_walks) {
    // c1 and c2 send the same datagram (same ports, IP id, payload: one fingerprint), 20 ms apart; the kernel
    // keeps port 41000 for c1 and gives c2 another. c2's packet must not continue c1's finished journey (from the
    // uplink back into a container is no path), with roles and, by the TTL alone, without them.
    const Tuple c1 = udp("172.17.0.2", 41000, "198.51.100.10", 7000);
    const Tuple c2 = udp("172.17.0.3", 41000, "198.51.100.10", 7000);
    const Tuple c1_nat = udp("192.168.43.116", 41000, "198.51.100.10", 7000);
    const Tuple c2_nat = udp("192.168.43.116", 1024, "198.51.100.10", 7000);
    for (const bool roles : {true, false}) {
        SCOPED_TRACE(roles ? "with roles" : "without roles");
        Builder b;
        b.add(1, 0, 9, c1), b.add(2, 2'000, 9, c1), b.add(3, 2'000, 9, c1), b.add(4, 30'000, 9, c1_nat);
        b.add(5, 20'000'000, 9, c2), b.add(6, 20'002'000, 9, c2), b.add(3, 20'002'000, 9, c2);
        b.add(4, 20'030'000, 9, c2_nat);
        const Journeys j = match(b.sightings, roles ? lab_roles() : MatchOptions{});
        ASSERT_EQ(j.count(), 2U);
        EXPECT_EQ(points_of(b.sightings, j, 0), (std::set<std::uint32_t>{1, 2, 3, 4}));
        EXPECT_EQ(points_of(b.sightings, j, 1), (std::set<std::uint32_t>{5, 6, 3, 4}));
        EXPECT_EQ(std::count(j.ambiguous.begin(), j.ambiguous.end(), 1), 0);
    }
}

TEST(Matcher, hundreds_of_same_shaped_datagrams_in_flight_are_matched_without_a_cap) {
    // 300 datagrams of one shape (IPv6-like: no IP id, the same length and first payload bytes), ports 30000-30299,
    // within 100 ms: each crosses the four points and is masqueraded keeping its port. Every one is its own
    // journey of four sightings, none flagged: the kept port tells them apart at the uplink.
    Builder b;
    constexpr int k_n = 300;
    for (int n = 0; n < k_n; ++n) {
        const auto port = static_cast<std::uint16_t>(30000 + n);
        const std::int64_t t = n * 300'000;
        const Tuple in = udp("172.17.0.2", port, "198.51.100.10", 7000);
        const Tuple out = udp("192.168.43.116", port, "198.51.100.10", 7000);
        b.add(1, t, 5, in), b.add(2, t + 1'000, 5, in), b.add(3, t + 1'000, 5, in), b.add(4, t + 40'000'000, 5, out);
    }
    const Journeys j = match(b.sightings, lab_roles());
    ASSERT_EQ(j.count(), static_cast<std::size_t>(k_n));
    for (std::size_t k = 0; k < j.count(); ++k) {
        ASSERT_EQ(j.of(k).size(), 4U) << "journey " << k;
        std::set<std::uint16_t> ports;
        for (auto i : j.of(k)) ports.insert(b.sightings[i].tuple.sport);
        EXPECT_EQ(ports.size(), 1U) << "journey " << k << " mixes datagrams";
    }
    EXPECT_EQ(std::count(j.ambiguous.begin(), j.ambiguous.end(), 1), 0);
}

TEST(Matcher, what_nothing_decides_is_flagged_and_never_merged_across_containers) {
    // c1 and c2 send the same datagram at the same moment, both keep no port (nothing learned, no conntrack): at the
    // uplink either translation could be either container's. Each container's sightings stay in a journey of their
    // own; the two uplink sightings are handed out first-in first-out, and both journeys are flagged.
    const Tuple c1 = udp("172.17.0.2", 41000, "198.51.100.10", 7000);
    const Tuple c2 = udp("172.17.0.3", 41000, "198.51.100.10", 7000);
    Builder b;
    b.add(1, 0, 9, c1), b.add(2, 1'000, 9, c1), b.add(3, 1'000, 9, c1);
    b.add(5, 500, 9, c2), b.add(6, 1'500, 9, c2), b.add(3, 1'500, 9, c2);
    b.add(4, 30'000, 9, udp("192.168.43.116", 2000, "198.51.100.10", 7000));
    b.add(4, 31'000, 9, udp("192.168.43.116", 2001, "198.51.100.10", 7000));
    const Journeys j = match(b.sightings, lab_roles());
    ASSERT_EQ(j.count(), 2U);
    for (std::size_t k = 0; k < 2; ++k) {
        const auto points = points_of(b.sightings, j, k);
        EXPECT_FALSE(points.contains(1) && points.contains(5)) << "journey " << k << " merges two containers";
        EXPECT_EQ(j.ambiguous[k], 1) << "journey " << k;
    }
    // The replies decide it too (flow state): the server's answer to port 2001 came back to c1. Then the requests are
    // assigned again with that translation, and nothing is left undecided.
    Builder replied = b;
    const Tuple to_2001 = udp("198.51.100.10", 7000, "192.168.43.116", 2001);
    const Tuple to_2000 = udp("198.51.100.10", 7000, "192.168.43.116", 2000);
    replied.add(4, 1'000'000, 10, to_2001), replied.add(3, 1'030'000, 10, udp("198.51.100.10", 7000, "172.17.0.2", 41000));
    replied.add(4, 1'500'000, 11, to_2000), replied.add(3, 1'530'000, 11, udp("198.51.100.10", 7000, "172.17.0.3", 41000));
    const Journeys r = match(replied.sightings, lab_roles());
    EXPECT_EQ(std::count(r.ambiguous.begin(), r.ambiguous.end(), 1), 0);
    for (std::size_t n = 0; n < r.count(); ++n) {
        const auto points = points_of(replied.sightings, r, n);
        EXPECT_FALSE(points.contains(1) && points.contains(5));
        const Sighting& head = replied.sightings[r.of(n).front()];
        if (head.point != 1) continue;  // c1's request: masqueraded to port 2001, as its reply shows
        std::set<std::uint16_t> ports;
        for (auto i : r.of(n)) ports.insert(replied.sightings[i].tuple.sport);
        EXPECT_EQ(ports, (std::set<std::uint16_t>{41000, 2001}));
    }
    // The kernel's own conntrack entries decide it: c2 got port 2000.
    MatchOptions told = lab_roles();
    told.known_translations = {{c2, udp("192.168.43.116", 2000, "198.51.100.10", 7000)},
                               {c1, udp("192.168.43.116", 2001, "198.51.100.10", 7000)}};
    const Journeys k = match(b.sightings, told);
    ASSERT_EQ(k.count(), 2U);
    EXPECT_EQ(std::count(k.ambiguous.begin(), k.ambiguous.end(), 1), 0);
    for (std::size_t n = 0; n < 2; ++n) {
        std::set<std::uint16_t> ports;
        for (auto i : k.of(n)) ports.insert(b.sightings[i].tuple.sport);
        EXPECT_EQ(ports, (b.sightings[k.of(n).front()].tuple.src.to_string() == "172.17.0.3"
                              ? std::set<std::uint16_t>{41000, 2000}
                              : std::set<std::uint16_t>{41000, 2001}));
    }
}

TEST(Matcher, a_reply_stamped_once_for_three_points_is_still_one_journey) {
    // Microsecond capture of a reply: docker0, the veth and c1 eth0 share one stamp. Whatever order ties come in,
    // the reply is one journey (the TTL says it was routed after the uplink).
    const Tuple out = udp("198.51.100.10", 7000, "192.168.43.116", 41000);
    const Tuple in = udp("198.51.100.10", 7000, "172.17.0.2", 41000);
    Builder b;
    b.add(4, 1'000, 3, out), b.add(1, 5'000, 3, in), b.add(2, 5'000, 3, in), b.add(3, 5'000, 3, in);
    const Journeys j = match(b.sightings, lab_roles());
    ASSERT_EQ(j.count(), 1U);
    EXPECT_EQ(j.of(0).size(), 4U);
}

TEST(Matcher, never_two_sightings_at_one_point_in_a_journey) {
    Builder b;
    // The same bytes twice at the same point within microseconds (a duplicate): two journeys.
    b.add(1, 1000, 5, k_c1);
    b.add(1, 1001, 5, k_c1);
    b.add(2, 1100, 5, k_c1);
    b.add(2, 1101, 5, k_c1);
    const Journeys j = match(b.sightings);
    ASSERT_EQ(j.count(), 2U);
    for (std::size_t k = 0; k < j.count(); ++k) {
        std::set<std::uint32_t> points;
        for (auto i : j.of(k)) EXPECT_TRUE(points.insert(b.sightings[i].point).second);
    }
}

TEST(Matcher, a_retransmission_after_the_hop_gap_is_its_own_journey) {
    Builder b;
    // Original lost after docker0; the retransmission 200 ms later crosses all four points.
    b.add(1, 0, 3, k_c1), b.add(2, 10'000, 3, k_c1), b.add(3, 20'000, 3, k_c1);
    const auto retx = b.add(1, 200'000'000, 3, k_c1);
    b.add(2, 200'010'000, 3, k_c1), b.add(3, 200'020'000, 3, k_c1);
    const auto up = b.add(4, 200'030'000, 3, k_c1_nat);
    const Journeys j = match(b.sightings);
    ASSERT_EQ(j.count(), 2U);
    EXPECT_EQ(j.of(0).size(), 3U);
    const auto second = journey_with(b.sightings, j, retx);
    EXPECT_EQ(second.size(), 4U);
    EXPECT_TRUE(second.contains(b.sightings[up].packet_id));
}

TEST(Matcher, unrelated_tuples_with_the_same_fingerprint_are_not_joined) {
    Builder b;
    b.add(1, 1000, 4, k_c1);
    b.add(2, 1100, 4, udp("10.0.0.1", 1, "10.0.0.2", 2));  // both sides differ: not one NAT step
    EXPECT_EQ(match(b.sightings).count(), 2U);
}

TEST(Matcher, result_does_not_depend_on_input_order) {
    Builder b;
    for (int n = 0; n < 50; ++n) {
        const std::int64_t t = n * 1'000'000;
        const std::uint64_t fp = 100 + static_cast<std::uint64_t>(n % 7);  // many collisions
        b.add(1, t, fp, k_c1), b.add(2, t + 10, fp, k_c1), b.add(3, t + 20, fp, k_c1), b.add(4, t + 30, fp, k_c1_nat);
    }
    auto journeys_as_ids = [](const std::vector<Sighting>& s) {
        const Journeys j = match(s);
        std::vector<std::vector<std::int64_t>> out;
        for (std::size_t k = 0; k < j.count(); ++k) {
            out.emplace_back();
            for (auto i : j.of(k)) out.back().push_back(s[i].packet_id);
        }
        return out;
    };
    const auto expected = journeys_as_ids(b.sightings);
    EXPECT_EQ(expected.size(), 50U);
    auto shuffled = b.sightings;
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(42));
    EXPECT_EQ(journeys_as_ids(shuffled), expected);
}

TEST(Analysis, packets_before_a_point_showed_it_was_capturing_are_lost_outside_its_window) {
    Builder b;
    // Ten packets cross c1 eth0 → uplink, but the uplink's file shows nothing before the fifth.
    for (int n = 0; n < 10; ++n) {
        const std::int64_t t = n * 10'000'000LL;
        const auto fp = static_cast<std::uint64_t>(100 + n);
        b.add(1, t, fp, k_c1);
        if (n >= 4) b.add(4, t + 30'000, fp, k_c1_nat);
    }
    b.add(4, 500'000'000, 999, udp("1.1.1.1", 1, "2.2.2.2", 2));  // the uplink keeps capturing after
    b.add(1, 600'000'000, 998, udp("172.17.0.2", 9, "172.17.0.9", 9));  // and so does c1 eth0
    // Imported files: nothing says when the uplink's capture began. The four are lost (the path says they went on),
    // and marked as lost while only the other file shows capturing.
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    ASSERT_EQ(a.losses.size(), 1U);
    EXPECT_EQ(a.losses[0].count, 4U);
    EXPECT_EQ(a.losses[0].outside_window, 4U);
    // A live capture knows its window: the uplink started after the fourth, so they were not lost.
    MatchOptions live;
    live.capture_start_ns = 35'000'000;
    live.capture_stop_ns = 700'000'000;
    Journeys k = match(b.sightings, live);
    const Analysis l = analyse(b.sightings, k, live);
    EXPECT_TRUE(l.losses.empty()) << l.losses.size() << " loss rows";
}

TEST(Analysis, a_translated_tuple_reused_after_the_flow_went_idle_is_a_new_flow) {
    // c1's flow is masqueraded to 192.168.43.116:40000; ten minutes later, long after conntrack forgot it,
    // c2's connection from the same port gets the same translation. Two flows, not one.
    Builder b;
    b.add(1, 0, 1, k_c1), b.add(4, 30'000, 1, k_c1_nat);
    const std::int64_t later = 600'000'000'000;
    b.add(5, later, 2, k_c2), b.add(4, later + 30'000, 2, k_c1_nat);
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    ASSERT_EQ(a.flows.size(), 2U);
    EXPECT_EQ(a.flows[0].original, k_c1);
    EXPECT_EQ(a.flows[1].original, k_c2);
    EXPECT_EQ(a.flows[1].translated, k_c1_nat);
}

TEST(Analysis, unanswered_traffic_ending_on_the_bridge_is_lost_only_if_bound_outside) {
    // Points: 1 c1 eth0, 2 its veth, 3 docker0, 4 the uplink (roles from a live capture).
    MatchOptions options;
    options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 3}};
    options.container_points = {1};
    options.capture_start_ns = 1;  // a live capture: every point captured from the start
    options.capture_stop_ns = 900'000'000;
    Builder b;
    const Tuple to_sibling = udp("172.17.0.2", 5000, "172.17.0.3", 8125);  // one-way statsd to a sibling
    const Tuple to_server = udp("172.17.0.2", 5001, "198.51.100.10", 9999);  // dropped by a FORWARD rule
    for (int n = 0; n < 10; ++n) {
        const std::int64_t t = n * 10'000'000LL;
        const auto fp = static_cast<std::uint64_t>(1000 + 10 * n);
        b.add(1, t, fp, to_sibling), b.add(2, t + 100, fp, to_sibling), b.add(3, t + 100, fp, to_sibling);
        b.add(1, t + 1000, fp + 1, to_server), b.add(2, t + 1100, fp + 1, to_server),
            b.add(3, t + 1100, fp + 1, to_server);
        // A ping to the server that went out: the server is reached by the uplink.
        const Tuple ping{1, ip("172.17.0.2"), ip("198.51.100.10"), 7, 0};
        const Tuple ping_nat{1, ip("192.168.43.116"), ip("198.51.100.10"), 7, 0};
        b.add(1, t + 2000, fp + 2, ping), b.add(2, t + 2100, fp + 2, ping), b.add(3, t + 2100, fp + 2, ping),
            b.add(4, t + 2200, fp + 2, ping_nat);
    }
    b.add(4, 900'000'000, 5, udp("1.1.1.1", 1, "2.2.2.2", 2));  // every point keeps capturing after
    b.add(3, 900'000'000, 6, udp("1.1.1.1", 1, "2.2.2.3", 2));
    Journeys j = match(b.sightings, options);
    const Analysis a = analyse(b.sightings, j, options);
    std::map<std::string, std::uint64_t> lost;  // flow's destination -> packets lost after docker0
    for (const Loss& l : a.losses) {
        EXPECT_EQ(l.after_point, 3U);
        EXPECT_EQ(l.expected_point, 4U);
        lost[a.flows[l.flow].original.dst.to_string()] += l.count;
    }
    EXPECT_EQ(lost, (std::map<std::string, std::uint64_t>{{"198.51.100.10", 10}}));
}

TEST(Analysis, percentile_is_nearest_rank) {
    const std::vector<std::int64_t> v{10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
    EXPECT_EQ(percentile(v, 50), 50);
    EXPECT_EQ(percentile(v, 90), 90);
    EXPECT_EQ(percentile(v, 99), 100);
    EXPECT_EQ(percentile(v, 0), 10);
    const std::vector<std::int64_t> one{7};
    EXPECT_EQ(percentile(one, 99), 7);
}

TEST(Analysis, flow_direction_rewrites_and_loss) {
    Builder b;
    const Tuple reply_nat = k_c1_nat.reversed();
    const Tuple reply = k_c1.reversed();
    for (int n = 0; n < 3; ++n) {
        const std::int64_t t = n * 1'000'000'000LL;
        const auto fp = static_cast<std::uint64_t>(10 + 2 * n);
        b.add(1, t, fp, k_c1), b.add(2, t + 100, fp, k_c1), b.add(3, t + 300, fp, k_c1),
            b.add(4, t + 700, fp, k_c1_nat);
        if (n == 2) continue;  // the last reply is lost after the uplink
        b.add(4, t + 5000, fp + 1, reply_nat), b.add(3, t + 5500, fp + 1, reply), b.add(2, t + 5600, fp + 1, reply),
            b.add(1, t + 5650, fp + 1, reply);
    }
    b.add(4, 2'000'005'000, 99, reply_nat);
    b.add(3, 9'000'000'000, 1000, udp("1.1.1.1", 1, "2.2.2.2", 2));  // keeps docker0's capture running
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    ASSERT_EQ(a.flows.size(), 2U);
    EXPECT_EQ(a.flows[0].original, k_c1);
    EXPECT_EQ(a.flows[0].translated, k_c1_nat);
    EXPECT_EQ(a.flows[0].journeys, 6U);
    EXPECT_EQ(a.path_order.front(), 1U);

    std::set<std::tuple<std::string, std::string, std::string, std::string>> rewrites;
    for (const Rewrite& r : a.rewrites)
        if (r.flow == 0) rewrites.insert({to_string(r.direction), field_name(r.field, false), r.from, r.to});
    EXPECT_EQ(rewrites, (std::set<std::tuple<std::string, std::string, std::string, std::string>>{
                            {"forward", "src", "172.17.0.2", "192.168.43.116"},
                            {"reply", "dst", "192.168.43.116", "172.17.0.2"}}));

    ASSERT_EQ(a.losses.size(), 1U);
    EXPECT_EQ(a.losses[0].direction, FlowDirection::reply);
    EXPECT_EQ(a.losses[0].after_point, 4U);
    EXPECT_EQ(a.losses[0].expected_point, 3U);
    EXPECT_EQ(a.losses[0].count, 1U);

    for (const HopStats& h : a.hops) {
        if (h.flow == 0U && h.direction == FlowDirection::forward && h.from_point == 3) {
            EXPECT_EQ(h.count, 3U);
            EXPECT_EQ(h.min_ns, 400);
            EXPECT_EQ(h.max_ns, 400);
        }
    }
}

// The journey (index) that contains sighting `index`.
std::size_t journey_index(const Journeys& j, std::size_t index) {
    for (std::size_t k = 0; k < j.count(); ++k) {
        auto m = j.of(k);
        if (std::find(m.begin(), m.end(), index) != m.end()) return k;
    }
    ADD_FAILURE() << "sighting " << index << " is in no journey";
    return 0;
}

// A live capture of c1 eth0 (1), its veth (2), docker0 (3) and the uplink (4).
MatchOptions live_options() {
    MatchOptions options;
    options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 3}};
    options.container_points = {1};
    options.capture_start_ns = 1;
    options.capture_stop_ns = 10'000'000'000;
    return options;
}

TEST(Relations, each_icmp_error_answers_the_probe_it_quotes_not_the_latest_one) {
    // traceroute -I sends three echo requests at once (one flow: same id), TTL 1; the host answers the
    // second and the first, in that order. The quoted IPv4 id and echo sequence name the probe.
    const Tuple echo{1, ip("172.17.0.2"), ip("198.51.100.10"), 77, 0};
    const Tuple error{1, ip("172.17.0.1"), ip("172.17.0.2"), 0, 0};
    Builder b;
    std::size_t probe[3];
    for (int n = 0; n < 3; ++n) {
        const std::int64_t t = 1'000 + n * 100;
        const auto fp = static_cast<std::uint64_t>(10 + n);
        probe[n] = b.add(1, t, fp, echo);
        b.add(2, t + 10, fp, echo), b.add(3, t + 20, fp, echo);
        for (std::size_t i = b.sightings.size() - 3; i < b.sightings.size(); ++i) {
            b.sightings[i].icmp_type = 8;
            b.sightings[i].seq = static_cast<std::uint32_t>(n + 1);
            b.sightings[i].ip_id = static_cast<std::uint16_t>(500 + n);
        }
    }
    std::size_t answer[2];
    for (int k = 0; k < 2; ++k) {
        const int n = 1 - k;  // the second probe is answered first
        const std::int64_t t = 5'000 + k * 100;
        const auto fp = static_cast<std::uint64_t>(20 + k);
        answer[k] = b.add(3, t, fp, error);
        b.add(2, t + 10, fp, error), b.add(1, t + 20, fp, error);
        for (std::size_t i = b.sightings.size() - 3; i < b.sightings.size(); ++i) {
            Sighting& s = b.sightings[i];
            s.flags = packet_flag::k_icmp_error;
            s.icmp_type = 11;
            s.inner = echo;
            s.has_inner_ip_id = true;
            s.inner_ip_id = static_cast<std::uint16_t>(500 + n);
            s.has_inner_seq = true;
            s.inner_seq = static_cast<std::uint32_t>(n + 1);
        }
    }
    // A fourth probe, with TTL 2, went out by the uplink: that is where the flow's packets go.
    const Tuple echo_nat{1, ip("192.168.43.116"), ip("198.51.100.10"), 77, 0};
    b.add(1, 6'000, 40, echo), b.add(2, 6'010, 40, echo), b.add(3, 6'020, 40, echo), b.add(4, 6'030, 40, echo_nat);
    for (std::size_t i = b.sightings.size() - 4; i < b.sightings.size(); ++i) {
        b.sightings[i].icmp_type = 8;
        b.sightings[i].seq = 4;
        b.sightings[i].ip_id = 503;
    }
    b.add(4, 9'000'000'000, 99, udp("1.1.1.1", 1, "2.2.2.2", 2));  // the uplink kept capturing
    const MatchOptions options = live_options();
    Journeys j = match(b.sightings, options);
    const Analysis a = analyse(b.sightings, j, options);
    for (int k = 0; k < 2; ++k) {
        const JourneyInfo& info = a.journeys[journey_index(j, answer[k])];
        EXPECT_TRUE(info.icmp_error);
        EXPECT_EQ(info.relation, Relation::answers);
        EXPECT_EQ(info.related, journey_index(j, probe[1 - k])) << "error " << k;
    }
    // The two answered probes expired after docker0; the third was dropped there without an answer.
    std::map<LossCause, std::uint64_t> causes;
    for (const Loss& l : a.losses) {
        EXPECT_EQ(l.after_point, 3U);
        causes[l.cause] += l.count;
    }
    EXPECT_EQ(causes, (std::map<LossCause, std::uint64_t>{{LossCause::dropped, 1}, {LossCause::expired, 2}}));
}

TEST(Relations, echo_replies_answer_their_request_and_tcp_retransmissions_repeat_the_original) {
    Builder b;
    const Tuple echo{1, ip("172.17.0.2"), ip("198.51.100.10"), 9, 0};
    const std::size_t request = b.add(1, 1'000, 1, echo);
    b.sightings[request].icmp_type = 8, b.sightings[request].seq = 4;
    const std::size_t other = b.add(1, 2'000, 2, echo);
    b.sightings[other].icmp_type = 8, b.sightings[other].seq = 5;
    const std::size_t reply = b.add(1, 3'000, 3, echo.reversed());
    b.sightings[reply].icmp_type = 0, b.sightings[reply].seq = 4;

    const Tuple tcp{6, ip("172.17.0.2"), ip("198.51.100.10"), 40000, 80};
    auto segment = [&](std::int64_t t, std::uint64_t fp, std::uint32_t seq, std::uint32_t len) {
        const std::size_t i = b.add(1, t, fp, tcp);
        b.sightings[i].seq = seq, b.sightings[i].payload_len = len, b.sightings[i].tcp_flags = 0x18;
        return i;
    };
    const std::size_t first = segment(10'000, 10, 1000, 100);
    const std::size_t second = segment(10'100, 11, 1100, 100);
    const std::size_t ack = segment(10'200, 12, 1200, 0);  // a pure ACK: never a retransmission
    b.sightings[ack].tcp_flags = 0x10;
    const std::size_t again = segment(310'000'000, 13, 1000, 100);  // RTO: new IP id, new fingerprint
    const std::size_t ack_again = segment(310'000'100, 14, 1200, 0);
    b.sightings[ack_again].tcp_flags = 0x10;
    // A 3000-byte super-packet, then one MSS from its middle sent again: it repeats the super-packet.
    const std::size_t big = segment(400'000'000, 15, 1200, 3000);
    const std::size_t middle = segment(700'000'000, 16, 2648, 1448);
    const std::size_t next = segment(700'000'100, 17, 4200, 1448);  // new bytes: not a repeat
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    auto info = [&](std::size_t i) { return a.journeys[journey_index(j, i)]; };
    EXPECT_EQ(info(reply).relation, Relation::answers);
    EXPECT_EQ(info(reply).related, journey_index(j, request));
    EXPECT_EQ(info(other).relation, Relation::none);
    EXPECT_EQ(info(again).relation, Relation::repeats);
    EXPECT_EQ(info(again).related, journey_index(j, first));
    EXPECT_EQ(info(second).relation, Relation::none);
    EXPECT_EQ(info(ack_again).relation, Relation::none);
    EXPECT_EQ(info(big).relation, Relation::none);
    EXPECT_EQ(info(middle).relation, Relation::repeats);
    EXPECT_EQ(info(middle).related, journey_index(j, big));
    EXPECT_EQ(info(next).relation, Relation::none);
}

TEST(Relations, an_answer_finds_its_request_however_many_journeys_of_the_flow_came_between) {
    // A ping flood: 6000 echo requests of one flow, 6000 journeys between the first request and its reply (the
    // others' replies never came), then an ICMP error quoting the first request by its IPv4 id and sequence.
    Builder b;
    const Tuple echo{1, ip("172.17.0.2"), ip("198.51.100.10"), 9, 0};
    std::vector<std::size_t> requests;
    for (std::uint32_t n = 0; n < 6000; ++n) {
        const std::size_t i = b.add(1, 1'000 + 1'000 * n, 100 + n, echo);
        b.sightings[i].icmp_type = 8, b.sightings[i].seq = n + 1, b.sightings[i].ip_id = static_cast<std::uint16_t>(n);
        requests.push_back(i);
    }
    const std::size_t reply = b.add(1, 7'000'000, 50, echo.reversed());
    b.sightings[reply].icmp_type = 0, b.sightings[reply].seq = 1;
    const std::size_t error = b.add(1, 7'001'000, 51, Tuple{1, ip("172.17.0.1"), ip("172.17.0.2"), 0, 0});
    Sighting& e = b.sightings[error];
    e.flags = packet_flag::k_icmp_error, e.icmp_type = 11, e.inner = echo;
    e.has_inner_ip_id = true, e.inner_ip_id = 0, e.has_inner_seq = true, e.inner_seq = 1;
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    EXPECT_EQ(a.journeys[journey_index(j, reply)].relation, Relation::answers);
    EXPECT_EQ(a.journeys[journey_index(j, reply)].related, journey_index(j, requests.front()));
    EXPECT_EQ(a.journeys[journey_index(j, error)].relation, Relation::answers);
    EXPECT_EQ(a.journeys[journey_index(j, error)].related, journey_index(j, requests.front()));
}

TEST(Relations, ip_id_reuse_is_neither_merged_nor_a_repeat) {
    // Two different datagrams of one flow with the same IPv4 id (the id wrapped, or a sender that reuses it):
    // different payloads give different fingerprints, so two journeys, and neither repeats the other.
    Builder b;
    const std::size_t first = b.add(1, 1'000, 71, k_c1);
    b.add(4, 2'000, 71, k_c1_nat);
    const std::size_t second = b.add(1, 3'000, 72, k_c1);
    b.add(4, 4'000, 72, k_c1_nat);
    for (Sighting& s : b.sightings) s.ip_id = 4242;
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    ASSERT_EQ(j.count(), 2U);
    EXPECT_NE(journey_index(j, first), journey_index(j, second));
    EXPECT_EQ(a.journeys[journey_index(j, second)].relation, Relation::none);
    EXPECT_EQ(j.of(journey_index(j, second)).size(), 2U);
}

TEST(Relations, a_duplicated_datagram_repeats_the_first_copy) {
    // The same UDP datagram (same fingerprint) seen twice at the uplink: a duplicate, its own journey.
    Builder b;
    const std::size_t original = b.add(1, 1'000, 7, k_c1);
    b.add(4, 2'000, 7, k_c1_nat);
    const std::size_t copy = b.add(4, 2'500, 7, k_c1_nat);
    Journeys j = match(b.sightings);
    const Analysis a = analyse(b.sightings, j);
    ASSERT_EQ(j.count(), 2U);
    EXPECT_EQ(a.journeys[journey_index(j, copy)].relation, Relation::repeats);
    EXPECT_EQ(a.journeys[journey_index(j, copy)].related, journey_index(j, original));
    EXPECT_EQ(a.flows.size(), 1U);
}

}  // namespace
}  // namespace hoptrace::correlate
