#include "store/writer.hpp"

#include "store/database.hpp"
#include "store/import.hpp"
#include "tracer/packet.hpp"

#include <gtest/gtest.h>

#include "temp_dir.hpp"
#include "within.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace hoptrace::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test::TempDir;

using test::within;

std::int64_t scalar(const Database& db, const std::string& sql) {
    Statement stmt = db.prepare(sql);
    EXPECT_TRUE(stmt.step()) << sql;
    return stmt.column_int(0);
}

std::uint32_t add_point(Database& db, const std::string& name) {
    Point point;
    point.name = name;
    return static_cast<std::uint32_t>(db.add_point(point));
}

IpAddr v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    IpAddr addr;
    addr.family = 4;
    addr.bytes[0] = a;
    addr.bytes[1] = b;
    addr.bytes[2] = c;
    addr.bytes[3] = d;
    return addr;
}

// 2001:db8::<last>
IpAddr v6(std::uint8_t last) {
    IpAddr addr;
    addr.family = 6;
    addr.bytes[0] = 0x20;
    addr.bytes[1] = 0x01;
    addr.bytes[2] = 0x0d;
    addr.bytes[3] = 0xb8;
    addr.bytes[15] = last;
    return addr;
}

std::vector<std::uint8_t> frame_bytes(std::size_t size, std::uint8_t seed) {
    std::vector<std::uint8_t> bytes(size);
    for (std::size_t i = 0; i < size; ++i) {
        bytes[i] = static_cast<std::uint8_t>(seed + i * 7);
    }
    return bytes;
}

// A column value as read back: NULL, an integer or a text.
using Value = std::variant<std::monostate, std::int64_t, std::string>;
constexpr std::monostate null{};

std::map<std::string, Value> read_row(const Database& db, std::int64_t ts_ns) {
    Statement stmt = db.prepare("SELECT * FROM packets WHERE ts_ns = ?1");
    stmt.bind(1, ts_ns);
    std::map<std::string, Value> row;
    EXPECT_TRUE(stmt.step()) << "no row with ts_ns " << ts_ns;
    const int columns = sqlite3_column_count(stmt.handle());
    for (int i = 0; i < columns; ++i) {
        const std::string name = sqlite3_column_name(stmt.handle(), i);
        switch (sqlite3_column_type(stmt.handle(), i)) {
            case SQLITE_NULL:
                row[name] = null;
                break;
            case SQLITE_INTEGER:
                row[name] = stmt.column_int(i);
                break;
            case SQLITE_TEXT:
                row[name] = stmt.column_text(i);
                break;
            case SQLITE_BLOB: {
                const auto blob = stmt.column_blob(i);
                row[name] = "blob:" + std::string(blob.begin(), blob.end());
                break;
            }
            default:
                ADD_FAILURE() << "unexpected type in column " << name;
        }
    }
    EXPECT_FALSE(stmt.step()) << "two rows with ts_ns " << ts_ns;
    return row;
}

void expect_row(const std::map<std::string, Value>& actual, const std::map<std::string, Value>& expected,
                const char* what) {
    ASSERT_EQ(actual.size(), 40U) << what;  // every column of `packets`, checked one by one
    ASSERT_EQ(expected.size(), actual.size() - 1) << what << ": the test must state every column but id";
    for (const auto& [column, value] : expected) {
        const auto it = actual.find(column);
        ASSERT_NE(it, actual.end()) << what << ": no column " << column;
        EXPECT_EQ(it->second, value) << what << ": column " << column;
    }
}

std::string blob(const std::vector<std::uint8_t>& bytes) { return "blob:" + std::string(bytes.begin(), bytes.end()); }

TEST(Writer, every_column_and_the_raw_bytes_round_trip_with_null_rules) {
    Database db = Database::open_memory();
    const std::uint32_t container = add_point(db, "container");
    const std::uint32_t uplink = add_point(db, "uplink");

    // 1: ICMP echo request over IPv4, seen inbound.
    PacketRecord echo;
    echo.ts_ns = 1'700'000'000'000'000'001;
    echo.point_id = container;
    echo.cap_len = 98;
    echo.wire_len = 98;
    echo.ifindex = 3;
    echo.direction = Direction::inbound;
    echo.ethertype = 0x0800;
    echo.ip_version = 4;
    echo.proto = 1;
    echo.ttl = 64;
    echo.src = v4(172, 17, 0, 2);
    echo.dst = v4(8, 8, 8, 8);
    echo.sport = 0x1234;
    echo.dport = 0x1234;
    echo.ip_id = 0xbeef;
    echo.ip_len = 84;
    echo.icmp_type = 8;
    echo.icmp_code = 0;
    echo.icmp_id = 0x1234;
    echo.icmp_seq = 7;
    echo.tcp_seq = 111;  // noise a dissector would not set: must not leak into the tcp_* columns
    echo.payload_len = 56;
    echo.fingerprint = 0x0123'4567'89ab'cdefULL;
    const auto echo_raw = frame_bytes(98, 1);

    // 2: TCP over IPv6, outbound, a fingerprint with the top bit set (stored as a negative int64).
    PacketRecord tcp;
    tcp.ts_ns = 1'700'000'000'000'000'002;
    tcp.point_id = uplink;
    tcp.cap_len = 74;
    tcp.wire_len = 1514;
    tcp.direction = Direction::outbound;
    tcp.ethertype = 0x86dd;
    tcp.ip_version = 6;
    tcp.proto = 6;
    tcp.ttl = 63;
    tcp.tcp_flags = 0x18;
    tcp.src = v6(1);
    tcp.dst = v6(0xff);
    tcp.sport = 43210;
    tcp.dport = 443;
    tcp.ip_len = 1500;
    tcp.icmp_type = 3;  // noise: must not leak into the icmp_* columns
    tcp.tcp_seq = 4'000'000'000U;
    tcp.tcp_ack = 123'456'789U;
    tcp.payload_len = 1440;
    tcp.flags = packet_flag::k_snapped;
    tcp.fingerprint = 0xfedc'ba98'7654'3210ULL;
    const auto tcp_raw = frame_bytes(74, 2);

    // 3: UDP over IPv4 with a VLAN tag, direction unknown.
    PacketRecord udp;
    udp.ts_ns = 1'700'000'000'000'000'003;
    udp.point_id = container;
    udp.cap_len = 64;
    udp.wire_len = 64;
    udp.ethertype = 0x0800;
    udp.vlan = 42;
    udp.ip_version = 4;
    udp.proto = 17;
    udp.ttl = 1;
    udp.src = v4(10, 0, 0, 1);
    udp.dst = v4(10, 0, 0, 255);
    udp.sport = 5353;
    udp.dport = 53;
    udp.ip_id = 1;
    udp.ip_len = 46;
    udp.udp_len = 26;
    udp.payload_len = 18;
    udp.flags = packet_flag::k_vlan;
    udp.fingerprint = 1;
    const auto udp_raw = frame_bytes(64, 3);

    // 4: ICMP time exceeded quoting a UDP probe.
    PacketRecord error;
    error.ts_ns = 1'700'000'000'000'000'004;
    error.point_id = uplink;
    error.cap_len = 70;
    error.wire_len = 70;
    error.direction = Direction::inbound;
    error.ethertype = 0x0800;
    error.ip_version = 4;
    error.proto = 1;
    error.ttl = 254;
    error.src = v4(192, 0, 2, 1);
    error.dst = v4(192, 0, 2, 100);
    error.ip_id = 9;
    error.ip_len = 56;
    error.icmp_type = 11;
    error.icmp_code = 0;
    error.payload_len = 28;
    error.inner_ip_version = 4;
    error.inner_proto = 17;
    error.inner_ttl = 1;
    error.inner_src = v4(192, 0, 2, 100);
    error.inner_dst = v4(198, 51, 100, 7);
    error.inner_sport = 40000;
    error.inner_dport = 33434;
    error.inner_ip_id = 77;
    error.flags = packet_flag::k_icmp_error;
    error.fingerprint = 0x8000'0000'0000'0000ULL;
    const auto error_raw = frame_bytes(70, 4);

    // 5: ICMPv6 error whose quoted packet could not be read (inner_ip_version 0): inner_* stay NULL.
    PacketRecord error6;
    error6.ts_ns = 1'700'000'000'000'000'005;
    error6.point_id = uplink;
    error6.cap_len = 62;
    error6.wire_len = 62;
    error6.ethertype = 0x86dd;
    error6.ip_version = 6;
    error6.proto = 58;
    error6.ttl = 255;
    error6.src = v6(2);
    error6.dst = v6(3);
    error6.ip_len = 48;
    error6.icmp_type = 1;
    error6.icmp_code = 4;
    error6.payload_len = 0;
    error6.inner_proto = 17;  // noise without inner_ip_version
    error6.flags = packet_flag::k_icmp_error | packet_flag::k_truncated;
    error6.fingerprint = 5;
    const auto error6_raw = frame_bytes(62, 5);

    // 6: an ARP frame: no IP, empty addresses, fingerprint 0, and no captured bytes at all.
    PacketRecord arp;
    arp.ts_ns = 1'700'000'000'000'000'006;
    arp.point_id = container;
    arp.cap_len = 0;
    arp.wire_len = 42;
    arp.ethertype = 0x0806;
    arp.flags = packet_flag::k_not_ip | packet_flag::k_snapped;
    const std::vector<std::uint8_t> arp_raw;

    Writer writer(db);
    writer.add(echo, echo_raw);
    writer.add(tcp, tcp_raw);
    writer.add(udp, udp_raw);
    writer.add(error, error_raw);
    writer.add(error6, error6_raw);
    writer.add(arp, arp_raw);
    writer.close();
    EXPECT_EQ(writer.rows_written(), 6U);

    const std::int64_t c = container;
    const std::int64_t u = uplink;
    expect_row(
        read_row(db, echo.ts_ns),
        {{"point_id", c},       {"ts_ns", echo.ts_ns}, {"cap_len", 98},        {"wire_len", 98},
         {"direction", "in"},   {"flags", 0},          {"ethertype", 0x0800},  {"vlan", 0},
         {"ip_version", 4},     {"proto", 1},          {"src", "172.17.0.2"},  {"dst", "8.8.8.8"},
         {"sport", 0x1234},     {"dport", 0x1234},     {"ip_id", 0xbeef},      {"ttl", 64},
         {"ip_len", 84},        {"icmp_type", 8},      {"icmp_code", 0},       {"icmp_id", 0x1234},
         {"icmp_seq", 7},       {"tcp_seq", null},     {"tcp_ack", null},      {"tcp_flags", null},
         {"payload_len", 56},   {"inner_proto", null}, {"inner_src", null},    {"inner_dst", null},
         {"inner_sport", null}, {"inner_dport", null}, {"inner_ttl", null},    {"inner_ip_id", null}, {"inner_seq", null}, {"fingerprint", 0x0123'4567'89ab'cdefLL},
         {"journey_id", null},  {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},         {"raw", blob(echo_raw)}},
        "icmp echo");
    expect_row(read_row(db, tcp.ts_ns),
               {{"point_id", u},
                {"ts_ns", tcp.ts_ns},
                {"cap_len", 74},
                {"wire_len", 1514},
                {"direction", "out"},
                {"flags", 64},
                {"ethertype", 0x86dd},
                {"vlan", 0},
                {"ip_version", 6},
                {"proto", 6},
                {"src", "2001:db8::1"},
                {"dst", "2001:db8::ff"},
                {"sport", 43210},
                {"dport", 443},
                {"ip_id", 0},
                {"ttl", 63},
                {"ip_len", 1500},
                {"icmp_type", null},
                {"icmp_code", null},
                {"icmp_id", null},
                {"icmp_seq", null},
                {"tcp_seq", 4'000'000'000LL},
                {"tcp_ack", 123'456'789},
                {"tcp_flags", 0x18},
                {"payload_len", 1440},
                {"inner_proto", null},
                {"inner_src", null},
                {"inner_dst", null},
                {"inner_sport", null},
                {"inner_dport", null},
                {"inner_ttl", null},
                {"inner_ip_id", null},
                {"inner_seq", null},
                {"fingerprint", static_cast<std::int64_t>(-0x0123'4567'89ab'cdf0LL)},
                {"journey_id", null},
                {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},
                {"raw", blob(tcp_raw)}},
               "tcp over ipv6");
    expect_row(read_row(db, udp.ts_ns),
               {{"point_id", c},       {"ts_ns", udp.ts_ns},  {"cap_len", 64},       {"wire_len", 64},
                {"direction", ""},     {"flags", 32},         {"ethertype", 0x0800}, {"vlan", 42},
                {"ip_version", 4},     {"proto", 17},         {"src", "10.0.0.1"},   {"dst", "10.0.0.255"},
                {"sport", 5353},       {"dport", 53},         {"ip_id", 1},          {"ttl", 1},
                {"ip_len", 46},        {"icmp_type", null},   {"icmp_code", null},   {"icmp_id", null},
                {"icmp_seq", null},    {"tcp_seq", null},     {"tcp_ack", null},     {"tcp_flags", null},
                {"payload_len", 18},   {"inner_proto", null}, {"inner_src", null},   {"inner_dst", null},
                {"inner_sport", null}, {"inner_dport", null}, {"inner_ttl", null},   {"inner_ip_id", null}, {"inner_seq", null}, {"fingerprint", 1},
                {"journey_id", null},  {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},         {"raw", blob(udp_raw)}},
               "udp with vlan");
    expect_row(read_row(db, error.ts_ns),
               {{"point_id", u},
                {"ts_ns", error.ts_ns},
                {"cap_len", 70},
                {"wire_len", 70},
                {"direction", "in"},
                {"flags", 16},
                {"ethertype", 0x0800},
                {"vlan", 0},
                {"ip_version", 4},
                {"proto", 1},
                {"src", "192.0.2.1"},
                {"dst", "192.0.2.100"},
                {"sport", 0},
                {"dport", 0},
                {"ip_id", 9},
                {"ttl", 254},
                {"ip_len", 56},
                {"icmp_type", 11},
                {"icmp_code", 0},
                {"icmp_id", 0},
                {"icmp_seq", 0},
                {"tcp_seq", null},
                {"tcp_ack", null},
                {"tcp_flags", null},
                {"payload_len", 28},
                {"inner_proto", 17},
                {"inner_src", "192.0.2.100"},
                {"inner_dst", "198.51.100.7"},
                {"inner_sport", 40000},
                {"inner_dport", 33434},
                {"inner_ttl", 1},
                {"inner_ip_id", 77},
                {"inner_seq", null},
                {"fingerprint", INT64_MIN},
                {"journey_id", null},
                {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},
                {"raw", blob(error_raw)}},
               "icmp time exceeded");
    expect_row(read_row(db, error6.ts_ns),
               {{"point_id", u},
                {"ts_ns", error6.ts_ns},
                {"cap_len", 62},
                {"wire_len", 62},
                {"direction", ""},
                {"flags", 17},
                {"ethertype", 0x86dd},
                {"vlan", 0},
                {"ip_version", 6},
                {"proto", 58},
                {"src", "2001:db8::2"},
                {"dst", "2001:db8::3"},
                {"sport", 0},
                {"dport", 0},
                {"ip_id", 0},
                {"ttl", 255},
                {"ip_len", 48},
                {"icmp_type", 1},
                {"icmp_code", 4},
                {"icmp_id", 0},
                {"icmp_seq", 0},
                {"tcp_seq", null},
                {"tcp_ack", null},
                {"tcp_flags", null},
                {"payload_len", 0},
                {"inner_proto", null},
                {"inner_src", null},
                {"inner_dst", null},
                {"inner_sport", null},
                {"inner_dport", null},
                {"inner_ttl", null},
                {"inner_ip_id", null},
                {"inner_seq", null},
                {"fingerprint", 5},
                {"journey_id", null},
                {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},
                {"raw", blob(error6_raw)}},
               "icmpv6 error without a readable quote");
    expect_row(read_row(db, arp.ts_ns),
               {{"point_id", c},
                {"ts_ns", arp.ts_ns},
                {"cap_len", 0},
                {"wire_len", 42},
                {"direction", ""},
                {"flags", 68},
                {"ethertype", 0x0806},
                {"vlan", 0},
                {"ip_version", 0},
                {"proto", 0},
                {"src", ""},
                {"dst", ""},
                {"sport", 0},
                {"dport", 0},
                {"ip_id", 0},
                {"ttl", 0},
                {"ip_len", 0},
                {"icmp_type", null},
                {"icmp_code", null},
                {"icmp_id", null},
                {"icmp_seq", null},
                {"tcp_seq", null},
                {"tcp_ack", null},
                {"tcp_flags", null},
                {"payload_len", 0},
                {"inner_proto", null},
                {"inner_src", null},
                {"inner_dst", null},
                {"inner_sport", null},
                {"inner_dport", null},
                {"inner_ttl", null},
                {"inner_ip_id", null},
                {"inner_seq", null},
                {"fingerprint", 0},
                {"journey_id", null},
                {"hop", null}, {"frag_offset", 0}, {"icmp_mtu", null},
                {"raw", std::string("blob:")}},
               "arp");
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets WHERE ts_ns = " + std::to_string(arp.ts_ns) +
                             " AND typeof(raw) = 'blob' AND length(raw) = 0"),
              1)
        << "an empty frame is an empty blob, not NULL";
    EXPECT_EQ(scalar(db, "SELECT packets FROM points WHERE name = 'container'"), 3);
    EXPECT_EQ(scalar(db, "SELECT packets FROM points WHERE name = 'uplink'"), 3);
}

TEST(Import, pcapng_interface_drops_become_the_points_kernel_drops) {
    // synthetic.pcapng (tests/data/tracer/make_synthetic.py): be0's interface statistics block says isb_ifdrop 3;
    // le0 and le1 have none. router.pcapng (dumpcap): isb_ifdrop 0 on r0 and r1.
    Database db = Database::open_memory();
    Writer writer(db);
    const std::string dir = std::string(HOPTRACE_TEST_DATA) + "/tracer/";
    for (const auto& [name, file] : {std::pair{"s", "synthetic.pcapng"}, std::pair{"r", "router.pcapng"}}) {
        const ImportResult r = import_file(db, writer, {name, dir + file, {}});
        ASSERT_FALSE(r.error) << *r.error;
    }
    writer.close();
    std::map<std::string, std::int64_t> drops;
    for (const Point& p : db.points()) drops[p.name] = p.kernel_drops;
    EXPECT_EQ(drops, (std::map<std::string, std::int64_t>{
                         // be0's packets come before the second section reveals more interfaces; its point is
                         // still named like the others.
                         {"s/be0", 3}, {"s/le0", 0}, {"s/le1", 0}, {"r/r0", 0}, {"r/r1", 0}}));
}

TEST(Writer, four_producers_rows_arrive_exactly_once_with_their_bytes) {
    constexpr int k_producers = 4;
    constexpr int k_rows = 50'000;
    Database db = Database::open_memory();
    std::vector<std::uint32_t> points;
    points.reserve(k_producers);
    for (int p = 0; p < k_producers; ++p) {
        points.push_back(add_point(db, "point-" + std::to_string(p)));
    }
    within(120s, [&] {
        Writer writer(db, 1000);
        std::vector<std::thread> producers;
        producers.reserve(k_producers);
        for (int p = 0; p < k_producers; ++p) {
            producers.emplace_back([&, p] {
                PacketRecord record;
                record.point_id = points[static_cast<std::size_t>(p)];
                for (int i = 0; i < k_rows; ++i) {
                    // ts_ns names the row; the frame's bytes name it too, with a length that varies.
                    record.ts_ns = std::int64_t{p} * 1'000'000 + i;
                    record.fingerprint = static_cast<std::uint64_t>(record.ts_ns);
                    const std::uint8_t frame[] = {static_cast<std::uint8_t>(p), static_cast<std::uint8_t>(i >> 16),
                                                  static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i),
                                                  0xaa};
                    record.cap_len = 4 + static_cast<std::uint32_t>(i % 2);
                    writer.add(record, std::span<const std::uint8_t>(frame, record.cap_len));
                }
            });
        }
        for (std::thread& producer : producers) {
            producer.join();
        }
        writer.close();
        EXPECT_EQ(writer.rows_written(), std::uint64_t{k_producers} * k_rows);
    });

    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), k_producers * k_rows);
    EXPECT_EQ(scalar(db, "SELECT count(DISTINCT ts_ns) FROM packets"), k_producers * k_rows);
    std::vector<int> seen(static_cast<std::size_t>(k_producers * k_rows), 0);
    Statement rows = db.prepare("SELECT point_id, ts_ns, cap_len, raw, fingerprint FROM packets");
    int bad = 0;
    while (rows.step()) {
        const std::int64_t ts = rows.column_int(1);
        const int p = static_cast<int>(ts / 1'000'000);
        const int i = static_cast<int>(ts % 1'000'000);
        ASSERT_TRUE(p >= 0 && p < k_producers && i >= 0 && i < k_rows) << ts;
        ++seen[(static_cast<std::size_t>(p) * k_rows) + static_cast<std::size_t>(i)];
        const auto raw = rows.column_blob(3);
        const std::vector<std::uint8_t> expected_raw = {
            static_cast<std::uint8_t>(p), static_cast<std::uint8_t>(i >> 16), static_cast<std::uint8_t>(i >> 8),
            static_cast<std::uint8_t>(i), 0xaa};
        const bool ok = rows.column_int(0) == points[static_cast<std::size_t>(p)] && rows.column_int(4) == ts &&
                        static_cast<std::int64_t>(raw.size()) == rows.column_int(2) &&
                        raw.size() == 4 + static_cast<std::size_t>(i % 2) &&
                        std::equal(raw.begin(), raw.end(), expected_raw.begin());
        bad += ok ? 0 : 1;
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), k_producers * k_rows);
    for (const std::uint32_t point : points) {
        EXPECT_EQ(scalar(db, "SELECT packets FROM points WHERE id = " + std::to_string(point)), k_rows);
    }
}

TEST(Writer, flush_makes_rows_visible_to_other_connections) {
    const TempDir dir;
    const std::string path = dir.file("flush.db");
    Database db = Database::open(path);
    const std::uint32_t point = add_point(db, "veth");
    const Database reader = Database::open(path);  // another connection, as the sqlite3 shell would be
    within(30s, [&] {
        Writer writer(db);  // batches of 4096: ten rows stay in the partial batch until flush()
        PacketRecord record;
        record.point_id = point;
        const std::uint8_t frame[] = {1, 2, 3};
        for (int i = 0; i < 10; ++i) {
            record.ts_ns = i;
            writer.add(record, frame);
        }
        EXPECT_EQ(scalar(reader, "SELECT count(*) FROM packets"), 0);
        writer.flush();
        EXPECT_EQ(writer.rows_written(), 10U);
        EXPECT_EQ(scalar(reader, "SELECT count(*) FROM packets"), 10);
        EXPECT_EQ(scalar(reader, "SELECT packets FROM points WHERE name = 'veth'"), 10);
        writer.flush();  // nothing new: returns at once
        record.ts_ns = 10;
        writer.add(record, frame);
        writer.close();
        EXPECT_EQ(scalar(reader, "SELECT count(*) FROM packets"), 11);
    });
}

TEST(Writer, point_counts_add_to_what_is_there) {
    Database db = Database::open_memory();
    Point point;
    point.name = "bridge";
    point.packets = 5;
    const auto id = static_cast<std::uint32_t>(db.add_point(point));
    const std::uint32_t other = add_point(db, "other");
    {
        Writer writer(db, 7);  // batches that split the points' rows unevenly
        PacketRecord record;
        const std::uint8_t frame[] = {0};
        for (int i = 0; i < 100; ++i) {
            record.point_id = i % 3 == 0 ? other : id;
            record.ts_ns = i;
            writer.add(record, frame);
        }
    }  // the destructor writes what is left
    EXPECT_EQ(scalar(db, "SELECT packets FROM points WHERE name = 'bridge'"), 5 + 66);
    EXPECT_EQ(scalar(db, "SELECT packets FROM points WHERE name = 'other'"), 34);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 100);
}

TEST(Writer, add_after_close_throws_and_close_is_idempotent) {
    Database db = Database::open_memory();
    const std::uint32_t point = add_point(db, "p");
    Writer writer(db);
    PacketRecord record;
    record.point_id = point;
    writer.add(record, {});
    writer.close();
    writer.close();
    writer.flush();
    EXPECT_THROW(writer.add(record, {}), Error);
    EXPECT_EQ(writer.rows_written(), 1U);
}

TEST(Writer, unknown_point_fails_flush_add_and_close) {
    Database db = Database::open_memory();
    const std::uint32_t point = add_point(db, "known");
    within(30s, [&] {
        Writer writer(db);
        PacketRecord record;
        record.point_id = point;
        writer.add(record, {});
        record.point_id = point + 100;
        writer.add(record, {});
        try {
            writer.flush();
            ADD_FAILURE() << "flush() succeeded";
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()), ":memory:: packets for point id " + std::to_string(point + 100) +
                                                 ", which is not in the points table");
        }
        EXPECT_THROW(writer.add(record, {}), Error);
        EXPECT_THROW(writer.flush(), Error);
        EXPECT_THROW(writer.close(), Error);
        EXPECT_THROW(writer.close(), Error);
        EXPECT_EQ(writer.rows_written(), 0U);
    });
    // The failed batch was rolled back as a whole, count included.
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 0);
    EXPECT_EQ(scalar(db, "SELECT packets FROM points"), 0);
}

TEST(Writer, read_only_database_fails_close_without_hanging) {
    const TempDir dir;
    const std::string path = dir.file("ro.db");
    Database db = Database::open(path);
    const std::uint32_t point = add_point(db, "p");
    db.exec("PRAGMA query_only = ON");
    within(30s, [&] {
        Writer writer(db, 16);
        PacketRecord record;
        record.point_id = point;
        // Far more than the pending cap: add() must not block forever once the writer has failed.
        bool failed = false;
        for (int i = 0; i < 10'000 && !failed; ++i) {
            try {
                writer.add(record, {});
            } catch (const Error& e) {
                failed = true;
                EXPECT_NE(std::string(e.what()).find("readonly"), std::string::npos) << e.what();
            }
        }
        EXPECT_TRUE(failed) << "add() never reported the failed writes";
        EXPECT_THROW(writer.close(), Error);
    });
}

TEST(Writer, producers_blocked_on_a_full_queue_wake_up_with_the_error) {
    Database db = Database::open_memory();
    const std::uint32_t point = add_point(db, "p");
    within(60s, [&] {
        Writer writer(db, 8);
        std::atomic<int> added{0};
        std::atomic<int> errors{0};
        std::vector<std::thread> producers;
        {
            // Holding a transaction stalls the writer thread (it waits for the connection), so the queue fills.
            Transaction stall(db);
            for (int p = 0; p < 3; ++p) {
                producers.emplace_back([&] {
                    PacketRecord record;
                    record.point_id = point;
                    try {
                        for (int i = 0; i < 100'000; ++i) {
                            writer.add(record, {});
                            ++added;
                        }
                    } catch (const Error&) {
                        ++errors;
                    }
                });
            }
            // Wait until every producer is stuck on the full queue: `added` stops moving.
            int last = -1;
            while (added.load() != last) {
                last = added.load();
                std::this_thread::sleep_for(100ms);
            }
            EXPECT_EQ(writer.peak_pending_batches(), Writer::k_max_pending_batches);
            db.exec("DROP TABLE packets");  // the writer's next INSERT fails
            stall.commit();
        }
        for (std::thread& producer : producers) {
            producer.join();
        }
        EXPECT_EQ(errors.load(), 3);
        EXPECT_THROW(writer.close(), Error);
    });
}

TEST(Writer, pending_batches_never_exceed_the_cap_with_a_slow_writer) {
    Database db = Database::open_memory();
    const std::uint32_t point = add_point(db, "p");
    constexpr int k_producers = 4;
    constexpr int k_rows = 2'000;
    within(60s, [&] {
        Writer writer(db, 4);
        std::atomic<int> added{0};
        std::vector<std::thread> producers;
        producers.reserve(k_producers);
        std::optional<Transaction> stall(std::in_place, db);  // the writer thread cannot write while we hold this
        for (int p = 0; p < k_producers; ++p) {
            producers.emplace_back([&, p] {
                PacketRecord record;
                record.point_id = point;
                const std::uint8_t frame[] = {static_cast<std::uint8_t>(p)};
                for (int i = 0; i < k_rows; ++i) {
                    record.ts_ns = std::int64_t{p} * k_rows + i;
                    writer.add(record, frame);
                    ++added;
                }
            });
        }
        int last = -1;
        while (added.load() != last) {
            last = added.load();
            std::this_thread::sleep_for(100ms);
        }
        // Stalled: at most the cap of full batches waits, plus one taken by the writer thread and the batch
        // being filled (which may overshoot by one row per blocked producer).
        EXPECT_EQ(writer.peak_pending_batches(), Writer::k_max_pending_batches);
        EXPECT_LE(added.load(), static_cast<int>((Writer::k_max_pending_batches + 2) * 4 + k_producers));
        EXPECT_EQ(writer.rows_written(), 0U);
        stall.reset();  // the writer may proceed; slow it down again now and then
        for (int round = 0; round < 5; ++round) {
            std::this_thread::sleep_for(20ms);
            const Transaction pause(db);
            std::this_thread::sleep_for(20ms);
        }
        for (std::thread& producer : producers) {
            producer.join();
        }
        writer.close();
        EXPECT_LE(writer.peak_pending_batches(), Writer::k_max_pending_batches);
        EXPECT_EQ(writer.rows_written(), std::uint64_t{k_producers} * k_rows);
    });
    EXPECT_EQ(scalar(db, "SELECT count(DISTINCT ts_ns) FROM packets"), k_producers * k_rows);
}

TEST(Writer, big_frames_are_handed_over_by_bytes_not_only_by_rows) {
    Database db = Database::open_memory();
    const std::uint32_t point = add_point(db, "jumbo");
    within(30s, [&] {
        Writer writer(db);  // 4096 rows per batch: row count alone would keep all of these in memory
        PacketRecord record;
        record.point_id = point;
        const std::vector<std::uint8_t> frame = frame_bytes(1 << 20, 9);
        for (int i = 0; i < 8; ++i) {
            record.ts_ns = i;
            writer.add(record, frame);
        }
        // 8 MiB reached: the batch goes to the writer thread without a flush().
        while (writer.rows_written() < 8) {
            std::this_thread::sleep_for(5ms);
        }
        EXPECT_EQ(writer.rows_written(), 8U);
        writer.close();
    });
    EXPECT_EQ(scalar(db, "SELECT sum(length(raw)) FROM packets"), 8 << 20);
}

}  // namespace
}  // namespace hoptrace::store
