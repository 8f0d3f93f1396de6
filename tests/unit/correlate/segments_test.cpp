// Segmentation offloads (GSO/TSO): a super-packet seen whole up to one point and as MTU-sized segments from
// the next one. Real captures first (tests/data/gso: an upload from the lab's c1 with offloads off on the
// uplink, one segment dropped beyond it and retransmitted; the expected numbers are tshark's, in its
// README), then the rule's edges on hand-built sightings.

#include "correlate/analysis.hpp"
#include "correlate/correlate.hpp"
#include "report/text.hpp"
#include "report_support.hpp"
#include "store/import.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace hoptrace {
namespace {

using Json = nlohmann::ordered_json;

const std::string k_gso = std::string(HOPTRACE_TEST_DATA) + "/gso/";

// What tshark read in the files (README.md).
constexpr std::int64_t k_super_packets = 12;
constexpr std::int64_t k_segments = 184;
constexpr std::int64_t k_uplink_data_packets = 185;    // the segments and the retransmission
constexpr std::int64_t k_docker0_upload_packets = 17;  // c1 → server:5001 at docker0, with or without payload
constexpr std::int64_t k_largest_super_packet = 40596;
constexpr std::int64_t k_largest_segment = 1500;
constexpr std::int64_t k_dropped_seq = 4236587916;
constexpr std::int64_t k_dropped_ip_id = 0x4c1b;        // the 14th segment of …
constexpr std::int64_t k_dropped_super_ip_id = 0x4c0e;  // … this super-packet
constexpr std::int64_t k_retransmission_ip_id = 0x4c3b;

store::Database imported() {
    auto db = store::Database::open_memory();
    store::Writer writer(db);
    for (const char* name : {"c1-eth0", "c1-veth", "docker0", "uplink"}) {
        const auto r = store::import_file(db, writer, {name, k_gso + name + ".pcap", {}});
        EXPECT_FALSE(r.error) << *r.error;
    }
    writer.close();
    correlate::run(db);
    return db;
}

std::int64_t point_id(const store::Database& db, const std::string& name) {
    auto q = db.prepare("SELECT id FROM points WHERE name = ?");
    q.bind(1, name);
    return q.step() ? q.column_int(0) : -1;
}

std::int64_t scalar(const store::Database& db, const std::string& sql) {
    auto q = db.prepare(sql);
    return q.step() ? q.column_int(0) : -1;
}

TEST(SegmentsLab, every_uplink_segment_is_a_segment_of_the_super_packet_that_holds_its_bytes) {
    auto db = imported();
    const std::int64_t docker0 = point_id(db, "docker0");
    const std::int64_t uplink = point_id(db, "uplink");
    // Each data packet the uplink saw, its journey's relation and, for segments, the super-packet's journey.
    auto q = db.prepare(
        "SELECT p.tcp_seq, p.payload_len, p.ip_id, j.relation, j.first_point, r.last_point, h.tcp_seq, "
        "h.payload_len, h.ip_len, j.related_id FROM packets p JOIN journeys j ON j.id = p.journey_id "
        "LEFT JOIN journeys r ON r.id = j.related_id LEFT JOIN packets h ON h.journey_id = r.id AND h.hop = 0 "
        "WHERE p.point_id = ? AND p.proto = 6 AND p.dport = 5001 AND p.payload_len > 0");
    q.bind(1, uplink);
    std::int64_t data = 0;
    std::int64_t segments = 0;
    std::set<std::int64_t> supers;
    while (q.step()) {
        ++data;
        const auto seq = static_cast<std::uint32_t>(q.column_int(0));
        const auto len = static_cast<std::uint32_t>(q.column_int(1));
        SCOPED_TRACE("uplink packet seq " + std::to_string(seq) + " ip id " + std::to_string(q.column_int(2)));
        if (q.column_int(2) == k_retransmission_ip_id) {
            EXPECT_EQ(q.column_text(3), "repeats");  // crossed every point whole: not a segment
            continue;
        }
        ++segments;
        ASSERT_EQ(q.column_text(3), "segment-of");
        EXPECT_EQ(q.column_int(4), uplink);   // the segment's journey begins at the uplink …
        EXPECT_EQ(q.column_int(5), docker0);  // … and its super-packet's ended at docker0, the point before
        EXPECT_GT(q.column_int(8), 1500);     // longer than the MTU
        const auto super_seq = static_cast<std::uint32_t>(q.column_int(6));
        const auto super_len = static_cast<std::uint32_t>(q.column_int(7));
        const std::uint32_t offset = seq - super_seq;
        EXPECT_LT(offset, super_len);
        EXPECT_LE(std::uint64_t{offset} + len, super_len);
        supers.insert(q.column_int(9));
    }
    EXPECT_EQ(data, k_uplink_data_packets);
    EXPECT_EQ(segments, k_segments);
    EXPECT_EQ(static_cast<std::int64_t>(supers.size()), k_super_packets);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM journeys WHERE relation = 'segment-of'"), k_segments);
}

TEST(SegmentsLab, the_retransmission_repeats_the_segment_that_was_dropped) {
    auto db = imported();
    // retransmission → (repeats) the dropped segment's journey → (segment-of) its super-packet's journey
    auto q = db.prepare(
        "SELECT j.relation, ps.ip_id, ps.tcp_seq, s.relation, pw.ip_id FROM packets p "
        "JOIN journeys j ON j.id = p.journey_id JOIN journeys s ON s.id = j.related_id "
        "JOIN packets ps ON ps.journey_id = s.id AND ps.hop = 0 "
        "JOIN journeys w ON w.id = s.related_id JOIN packets pw ON pw.journey_id = w.id AND pw.hop = 0 "
        "WHERE p.ip_id = ? AND p.hop = 0");
    q.bind(1, k_retransmission_ip_id);
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.column_text(0), "repeats");
    EXPECT_EQ(q.column_int(1), k_dropped_ip_id);
    EXPECT_EQ(q.column_int(2), k_dropped_seq);
    EXPECT_EQ(q.column_text(3), "segment-of");
    EXPECT_EQ(q.column_int(4), k_dropped_super_ip_id);
}

TEST(SegmentsLab, no_loss_one_hop_sample_per_packet_and_the_report_says_where_it_happened) {
    auto db = imported();
    // Without the segments, the super-packets' journeys end at docker0 while the uplink kept capturing
    // (the ping 0.3 s later): that alone would be a loss.
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM journeys j JOIN points pt ON pt.id = j.last_point "
                         "WHERE pt.name = 'docker0' AND j.id IN (SELECT related_id FROM journeys)"),
              k_super_packets);
    const report::ReportModel model = report::load_report(db);
    const Json report = report::to_json(model);
    const Json* flow = nullptr;
    for (const Json& f : report["flows"])
        if (f["proto"] == "tcp" && f["original"]["dport"] == 5001) flow = &f;
    ASSERT_NE(flow, nullptr);
    EXPECT_EQ((*flow)["lost"], Json::array());
    const Json expected = Json::array({{{"between", {"docker0", "uplink"}},
                                        {"direction", "forward"},
                                        {"super_packets", k_super_packets},
                                        {"segments", k_segments},
                                        {"max_super_packet_bytes", k_largest_super_packet},
                                        {"max_segment_bytes", k_largest_segment}}});
    EXPECT_EQ((*flow)["segmentation"], expected);
    // Every packet docker0 saw crossed to the uplink once: whole, or cut (one sample, up to its first segment).
    bool found = false;
    for (const Json& h : (*flow)["hops"]) {
        if (h["direction"] != "forward" || h["from"] != "docker0") continue;
        found = true;
        EXPECT_EQ(h["to"], "uplink");
        EXPECT_EQ(h["count"], k_docker0_upload_packets);
        EXPECT_GT(h["min_ns"].get<std::int64_t>(), 0);
    }
    EXPECT_TRUE(found);
    const auto typed = std::find_if(model.flows.begin(), model.flows.end(),
                                    [&](const report::Flow& f) { return f.id == (*flow)["id"]; });
    ASSERT_NE(typed, model.flows.end());
    const std::string text = report::narrate(*typed, model.points);
    EXPECT_NE(text.find("12 super-packets (up to 39.6 KiB) were cut into 184 segments (up to 1500 bytes) between "
                        "docker0 and uplink (GSO/TSO)."),
              std::string::npos)
        << text;
}

TEST(SegmentsLab, the_html_page_says_it_in_the_flows_details) {
    auto db = imported();
    const std::string html = test::html_page(db);
    EXPECT_NE(html.find("forward 12 super-packets cut into 184 segments between docker0 and uplink (GSO/TSO)"),
              std::string::npos);
}

}  // namespace

namespace correlate {
namespace {

// Points: 1 c1 eth0, 2 its veth, 3 docker0, 4 the uplink.
IpAddr ip(const char* text) { return IpAddr::parse(text).value(); }
const Tuple k_inside{6, ip("172.17.0.2"), ip("198.51.100.10"), 40000, 5001};
const Tuple k_outside{6, ip("192.168.43.116"), ip("198.51.100.10"), 40000, 5001};
constexpr std::uint8_t k_ack_psh = 0x18;

struct Upload {
    std::vector<Sighting> sightings;
    std::uint64_t next_fp = 1;
    MatchOptions options;

    Upload() {
        options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 3}};
        options.container_points = {1};
        options.capture_start_ns = 1;  // a live capture's window: a journey that stops early is a loss
        options.capture_stop_ns = 10'000'000'000;
    }
    std::size_t add(std::uint32_t point, std::int64_t ts_ns, std::uint64_t fp, std::uint32_t seq, std::uint32_t len,
                    std::uint8_t flags = k_ack_psh) {
        Sighting s;
        s.packet_id = static_cast<std::int64_t>(sightings.size()) + 1;
        s.point = point;
        s.ts_ns = ts_ns;
        s.fingerprint = fp;
        s.tuple = point == 4 ? k_outside : k_inside;
        s.ttl = point == 4 ? 63 : 64;  // outward: routed (and masqueraded) between docker0 and the uplink
        s.seq = seq;
        s.payload_len = len;
        s.tcp_flags = flags;
        sightings.push_back(s);
        return sightings.size() - 1;
    }
    // A SYN across all four points: it teaches the path.
    void syn(std::int64_t t, std::uint32_t seq) {
        const std::uint64_t fp = next_fp++;
        for (std::uint32_t p = 1; p <= 4; ++p) add(p, t + 1000 * (p - 1), fp, seq, 0, 0x02);
    }
    // A super-packet seen at c1 eth0, its veth and docker0 (ending at docker0 at t + 2000).
    std::size_t super(std::int64_t t, std::uint32_t seq, std::uint32_t len, std::uint32_t from_point = 1) {
        const std::uint64_t fp = next_fp++;
        std::size_t first = 0;
        for (std::uint32_t p = from_point; p <= 3; ++p) {
            const std::size_t i = add(p, t + 1000 * (p - 1), fp, seq, len);
            if (p == from_point) first = i;
        }
        return first;
    }
    std::size_t segment(std::int64_t t, std::uint32_t seq, std::uint32_t len) { return add(4, t, next_fp++, seq, len); }
};

// The journey index of sighting `s`.
std::uint32_t journey_of(const Journeys& j, std::size_t s) {
    for (std::uint32_t k = 0; k < j.count(); ++k) {
        const auto m = j.of(k);
        if (std::find(m.begin(), m.end(), s) != m.end()) return k;
    }
    ADD_FAILURE() << "sighting " << s << " in no journey";
    return 0;
}

TEST(Segments, sequence_ranges_that_wrap_past_2_to_the_32_still_contain_their_segments) {
    Upload u;
    const std::uint32_t seq = 4294965296U;  // 2^32 - 2000: the third segment starts at 896, after the wrap
    u.syn(0, seq - 1);
    const std::size_t w = u.super(1'000'000, seq, 4344);
    const std::size_t next = u.super(1'010'000, seq + 4344, 2896);  // starts at 2344, after the wrap too
    std::vector<std::size_t> segs;
    for (std::uint32_t k = 0; k < 3; ++k) segs.push_back(u.segment(1'003'000 + 100 * k, seq + 1448 * k, 1448));
    const std::size_t late = u.segment(1'013'000, seq + 4344, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    for (const std::size_t s : segs) {
        const JourneyInfo& info = a.journeys[journey_of(j, s)];
        EXPECT_EQ(info.relation, Relation::segment_of) << "segment with seq " << u.sightings[s].seq;
        EXPECT_EQ(info.related, journey_of(j, w));
    }
    EXPECT_EQ(a.journeys[journey_of(j, late)].relation, Relation::segment_of);
    EXPECT_EQ(a.journeys[journey_of(j, late)].related, journey_of(j, next));
    EXPECT_TRUE(a.losses.empty());
}

TEST(Segments, only_a_strictly_smaller_range_inside_arriving_within_the_hop_gap_at_the_next_point_is_a_segment) {
    Upload u;
    const std::uint32_t seq = 1000;
    u.syn(0, seq - 1);
    u.super(1'000'000, seq, 2896);
    const std::size_t inside = u.segment(1'003'000, seq, 1448);
    const std::size_t past_the_end = u.segment(1'003'100, seq + 2000, 1448);   // runs 552 bytes past it
    const std::size_t before = u.segment(1'003'200, seq - 100, 1448);           // starts before it
    const std::size_t as_large = u.segment(1'003'300, seq, 2896);               // not smaller: not cut from it
    const std::size_t too_late = u.segment(1'002'000 + 100'000'001, seq + 1448, 1448);  // after the hop gap
    // A segment-sized journey starting at docker0 (not after it) is not a segment of anything either.
    const std::size_t at_docker0 = u.add(3, 1'003'400, u.next_fp++, seq + 1448, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    EXPECT_EQ(a.journeys[journey_of(j, inside)].relation, Relation::segment_of);
    for (const std::size_t s : {past_the_end, before, as_large, too_late, at_docker0})
        EXPECT_NE(a.journeys[journey_of(j, s)].relation, Relation::segment_of) << "sighting " << s;
}

TEST(Segments, a_retransmitted_super_packet_takes_the_segments_that_follow_it) {
    Upload u;
    const std::uint32_t seq = 5000;
    u.syn(0, seq - 1);
    const std::size_t original = u.super(1'000'000, seq, 2896);
    const std::size_t first = u.segment(1'003'000, seq, 1448);
    const std::size_t first2 = u.segment(1'003'100, seq + 1448, 1448);  // lost beyond the uplink
    // 50 ms later (within the hop gap, so the original is still a candidate) c1 sends the second half again
    // with more data behind it: it overlaps the original, and its first segment lies inside both.
    const std::size_t again = u.super(51'000'000, seq + 1448, 2896);
    const std::size_t second = u.segment(51'003'000, seq + 1448, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    EXPECT_EQ(a.journeys[journey_of(j, first)].related, journey_of(j, original));
    EXPECT_EQ(a.journeys[journey_of(j, first2)].related, journey_of(j, original));
    EXPECT_EQ(a.journeys[journey_of(j, second)].relation, Relation::segment_of);
    EXPECT_EQ(a.journeys[journey_of(j, second)].related, journey_of(j, again));
    // The retransmission starts with the bytes of the original's second segment: it repeats that segment.
    EXPECT_EQ(a.journeys[journey_of(j, again)].relation, Relation::repeats);
    EXPECT_EQ(a.journeys[journey_of(j, again)].related, journey_of(j, first2));
    EXPECT_TRUE(a.losses.empty());
}

TEST(Segments, however_many_smaller_journeys_wait_below_a_segment_the_super_packet_holding_it_is_found) {
    // A 60 000-byte super-packet, then 40 small pieces of it sent again that all stopped at docker0 too: they wait
    // between the super-packet's first byte and the segment's, and none of them holds the segment.
    Upload u;
    const std::uint32_t seq = 10'000;
    u.syn(0, seq - 1);
    const std::size_t whole = u.super(1'000'000, seq, 60'000);
    for (std::uint32_t k = 1; k <= 40; ++k) u.super(1'010'000 + 10 * k, seq + 100 * k, 50);
    const std::size_t seg = u.segment(1'020'000, seq + 5'000, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    EXPECT_EQ(a.journeys[journey_of(j, seg)].relation, Relation::segment_of);
    EXPECT_EQ(a.journeys[journey_of(j, seg)].related, journey_of(j, whole));
}

TEST(Segments, a_super_packet_first_seen_at_the_same_instant_as_its_segment_still_comes_first) {
    // Microsecond captures of docker0 and the uplink only: the super-packet and its first segment share a
    // timestamp, and the segment's fingerprint sorts first.
    Upload u;
    u.add(3, 0, 50, 99, 0, 0x02), u.add(4, 10'000, 50, 99, 0, 0x02);  // the SYN teaches docker0 → uplink
    const std::size_t w = u.add(3, 1'000'000, 41, 100, 2896);
    const std::size_t s0 = u.add(4, 1'000'000, 40, 100, 1448);
    const std::size_t s1 = u.add(4, 1'001'000, 42, 1548, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    EXPECT_EQ(a.journeys[journey_of(j, s0)].relation, Relation::segment_of);
    EXPECT_EQ(a.journeys[journey_of(j, s0)].related, journey_of(j, w));
    EXPECT_EQ(a.journeys[journey_of(j, s1)].related, journey_of(j, w));
    EXPECT_EQ(a.journeys[journey_of(j, w)].relation, Relation::none);  // not a retransmission of its segment
}

TEST(Segments, a_capture_that_starts_in_the_middle_of_an_upload_still_ties_the_segments) {
    // No SYN and no data packet crossed docker0 → uplink whole: only the server's ACKs order the points. The
    // network is routed, not masqueraded (with NAT, a connection whose first captured packet stops at docker0
    // is split into an inside and an outside flow: see correlation.md, limits).
    Upload u;
    std::vector<std::size_t> segs;
    for (std::uint32_t n = 0; n < 3; ++n) {
        const std::int64_t t = 1'000'000 + 100'000 * n;
        const std::uint32_t seq = 100 + 2896 * n;
        u.super(t, seq, 2896);
        segs.push_back(u.segment(t + 3000, seq, 1448));
        segs.push_back(u.segment(t + 3100, seq + 1448, 1448));
        const std::uint64_t fp = u.next_fp++;  // the reply, uplink → docker0 → veth → c1 eth0
        for (std::uint32_t p = 4; p >= 1; --p) u.add(p, t + 50'000 + 1000 * (4 - p), fp, 7, 0, 0x10);
    }
    for (Sighting& s : u.sightings) {
        s.tuple = s.tcp_flags == 0x10 ? k_inside.reversed() : k_inside;
        if (s.tcp_flags == 0x10) s.ttl = s.point == 4 ? 64 : 63;  // inward: routed after the uplink
    }
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    ASSERT_EQ(a.flows.size(), 1U);
    for (const std::size_t s : segs) EXPECT_EQ(a.journeys[journey_of(j, s)].relation, Relation::segment_of);
    EXPECT_TRUE(a.losses.empty());
}

TEST(Segments, a_super_packet_gives_its_hop_one_sample_up_to_its_first_segment) {
    Upload u;
    u.syn(0, 99);  // docker0 at 2000, uplink at 3000: a 1000 ns hop
    u.super(1'000'000, 100, 4344);  // at docker0 at 1'002'000
    u.segment(1'002'500, 100, 1448);
    u.segment(1'002'600, 1548, 1448);
    u.segment(1'002'700, 2996, 1448);
    Journeys j = match(u.sightings, u.options);
    const Analysis a = analyse(u.sightings, j, u.options);
    const HopStats* hop = nullptr;
    for (const HopStats& h : a.hops)
        if (h.flow == 0U && h.direction == FlowDirection::forward && h.from_point == 3 && h.to_point == 4) hop = &h;
    ASSERT_NE(hop, nullptr);
    EXPECT_EQ(hop->count, 2U);  // the SYN and the super-packet
    EXPECT_EQ(hop->min_ns, 500);
    EXPECT_EQ(hop->max_ns, 1000);
    std::uint64_t rewritten = 0;
    for (const Rewrite& r : a.rewrites)
        if (r.direction == FlowDirection::forward && r.field == field::k_src) rewritten += r.packets;
    EXPECT_EQ(rewritten, 2U);  // the masquerade, seen on the SYN and on the super-packet
    EXPECT_TRUE(a.losses.empty());
}

}  // namespace
}  // namespace correlate
}  // namespace hoptrace
