// hoptrace export on a real capture: tests/data/lab (tcpdump at the six points of two containers' paths,
// see its README) imported, correlated, exported, and the pcapng read back by tshark/capinfos, by our own
// reader and by a strict block walker. What must come back: one interface per point, every packet with the
// database's bytes and its timestamp to the nanosecond, in time order, and a comment naming its journey and
// hop. The NAT rewrites the comments name are checked against the kernel's own record (conntrack.txt).

#include "report/export.hpp"
#include "correlate/correlate.hpp"
#include "store/import.hpp"

#include "pcapng_check.hpp"
#include "tracer/capture_file.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace hoptrace::report {
namespace {

using test::TempDir;

const std::string k_lab = std::string(HOPTRACE_TEST_DATA) + "/lab/";
const std::vector<std::pair<std::string, std::string>> k_files{{"c1-eth0", "c1-eth0.pcap"}, {"c1-veth", "c1-veth.pcap"},
                                                               {"c2-eth0", "c2-eth0.pcap"}, {"c2-veth", "c2-veth.pcap"},
                                                               {"docker0", "docker0.pcap"}, {"uplink", "uplink.pcap"}};

store::Database lab_db() {
    auto db = store::Database::open_memory();
    {
        store::Writer writer(db);
        for (const auto& [name, file] : k_files) {
            const auto r = store::import_file(db, writer, {name, k_lab + file, {}});
            EXPECT_FALSE(r.error) << *r.error;
        }
        writer.close();
    }
    correlate::run(db);
    return db;
}

// The database's packets in the order the export promises, by SQL: time, then the point's place on the path
// (path_order, NULLs last, then point id: the interface order), then packet id.
struct Row {
    std::int64_t id = 0;
    std::string point;
    std::int64_t ts_ns = 0;
    std::vector<std::uint8_t> raw;
    std::optional<std::int64_t> journey;
    std::int64_t hop = 0;
    std::int64_t sightings = 0;
    std::int64_t flow = 0;
    std::string direction;
    std::string proto_src;  // "proto src" of the packet, to pick flows
};

std::vector<Row> db_rows(const store::Database& db, const std::string& where = "") {
    auto q = db.prepare(
        "SELECT p.id, pt.name, p.ts_ns, p.raw, p.journey_id, p.hop, j.sightings, j.flow_id, j.direction "
        "FROM packets p JOIN points pt ON pt.id = p.point_id LEFT JOIN journeys j ON j.id = p.journey_id " +
        where + " ORDER BY p.ts_ns, pt.path_order IS NULL, pt.path_order, pt.id, p.id");
    std::vector<Row> rows;
    while (q.step()) {
        Row r;
        r.id = q.column_int(0);
        r.point = q.column_text(1);
        r.ts_ns = q.column_int(2);
        const auto raw = q.column_blob(3);
        r.raw.assign(raw.begin(), raw.end());
        if (!q.column_is_null(4)) {
            r.journey = q.column_int(4);
            r.hop = q.column_int(5);
            r.sightings = q.column_int(6);
            r.flow = q.column_int(7);
            r.direction = q.column_text(8);
        }
        rows.push_back(std::move(r));
    }
    return rows;
}

std::vector<std::string> point_names(const store::Database& db) {
    std::vector<std::string> names;
    for (const auto& p : db.points()) names.push_back(p.name);
    return names;
}

std::string export_to(const store::Database& db, const TempDir& dir, const std::string& name,
                      std::optional<FlowFilter> flows = std::nullopt) {
    std::string path = dir.file(name);
    const auto s = export_pcapng(db, path, {"hoptrace test", std::move(flows)});
    EXPECT_TRUE(s) << s.error();
    return path;
}

std::string expected_journey_prefix(const Row& r) {
    return "journey " + std::to_string(*r.journey) + " (flow " + std::to_string(r.flow) + ", " + r.direction +
           "), hop " + std::to_string(r.hop + 1) + " of " + std::to_string(r.sightings) + ": ";
}

TEST(ExportLab, our_reader_gets_every_packet_with_the_databases_bytes_and_time) {
    const auto db = lab_db();
    TempDir dir;
    const std::string path = export_to(db, dir, "lab.pcapng");
    const auto rows = db_rows(db);
    ASSERT_EQ(rows.size(), 178U);  // README: 23 × 4 + 44 + 42 frames in the six files

    auto file = CaptureFile::open(path);
    ASSERT_TRUE(file) << file.error();
    FileFrame ff;
    std::size_t n = 0;
    for (;;) {
        auto more = (*file)->next(ff);
        ASSERT_TRUE(more) << more.error();
        if (!*more) break;
        ASSERT_LT(n, rows.size());
        const Row& want = rows[n++];
        SCOPED_TRACE("frame " + std::to_string(n) + ", packet id " + std::to_string(want.id));
        EXPECT_EQ((*file)->interfaces().at(ff.interface).name, want.point);
        EXPECT_EQ(ff.frame.ts_ns, want.ts_ns);
        EXPECT_EQ(std::vector<std::uint8_t>(ff.frame.bytes.begin(), ff.frame.bytes.end()), want.raw);
    }
    EXPECT_EQ(n, rows.size());
    std::vector<std::string> names;
    for (const auto& i : (*file)->interfaces()) names.push_back(i.name);
    EXPECT_EQ(names, point_names(db));
    // Each interface's statistics block carries its point's kernel drops (the loss evidence).
    std::map<std::string, std::int64_t> drops;
    for (const auto& p : db.points()) drops[p.name] = p.kernel_drops;
    for (const auto& i : (*file)->interfaces()) {
        ASSERT_TRUE(i.kernel_drops.has_value()) << i.name << ": no interface statistics block";
        EXPECT_EQ(static_cast<std::int64_t>(*i.kernel_drops), drops.at(i.name)) << i.name;
    }
}

TEST(ExportLab, every_block_is_well_formed_and_every_packet_commented) {
    const auto db = lab_db();
    TempDir dir;
    const std::string path = export_to(db, dir, "lab.pcapng");
    const test::Walked w = test::walk_pcapng(path);
    ASSERT_EQ(w.error, "");
    EXPECT_EQ(w.section_options.at(4), std::vector<std::string>{"hoptrace test"});
    ASSERT_EQ(w.interfaces.size(), 6U);
    for (const auto& i : w.interfaces) {
        EXPECT_EQ(i.link_type, 1);
        EXPECT_EQ(i.options.at(9), std::vector<std::string>{std::string(1, '\x09')});
        // The role the import inferred (correlate/roles.hpp), then where the file came from.
        const std::string& comment = i.options.at(3).at(0);
        EXPECT_EQ(comment.rfind("role ", 0), 0U) << comment;
        EXPECT_NE(comment.find(", imported from " + k_lab), std::string::npos) << comment;
    }
    const auto rows = db_rows(db);
    ASSERT_EQ(w.packets.size(), rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) {
        ASSERT_EQ(w.packets[k].comments.size(), 1U) << "packet " << k + 1;
        if (k > 0) {
            EXPECT_LE(w.packets[k - 1].timestamp, w.packets[k].timestamp);
        }
    }
}

TEST(ExportLab, tshark_sees_the_points_packets_comments_and_nanoseconds) {
    if (!test::have_tool("tshark") || !test::have_tool("capinfos")) GTEST_SKIP() << "tshark/capinfos not installed";
    const auto db = lab_db();
    TempDir dir;
    const std::string path = export_to(db, dir, "lab.pcapng");
    const auto rows = db_rows(db);

    const auto info = test::run_command("capinfos -M -I '" + path + "'");
    ASSERT_TRUE(info);
    EXPECT_NE(info->find("Number of interfaces in file: 6"), std::string::npos) << *info;
    for (const std::string& name : point_names(db))
        EXPECT_NE(info->find("Name = " + name + "\n"), std::string::npos) << name << " in\n" << *info;

    const auto frames = test::tshark_fields(path, {"frame.interface_name", "frame.time_epoch", "frame.comment"});
    ASSERT_TRUE(frames);
    ASSERT_EQ(frames->size(), rows.size());
    std::set<std::int64_t> journeys;
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const auto& f = (*frames)[k];
        const Row& r = rows[k];
        SCOPED_TRACE("frame " + std::to_string(k + 1) + ": " + f[2]);
        EXPECT_EQ(f[0], r.point);
        EXPECT_EQ(test::epoch_ns(f[1]), r.ts_ns) << f[1];
        if (!r.journey) {
            EXPECT_EQ(f[2], "not matched (not IP: ARP)");  // README: the only non-journey frames are ARP
            continue;
        }
        journeys.insert(*r.journey);
        EXPECT_EQ(f[2].rfind(expected_journey_prefix(r), 0), 0U);
        if (r.hop == 0) {
            EXPECT_EQ(f[2], expected_journey_prefix(r) + "first seen at " + r.point);
        } else {
            EXPECT_NE(f[2].find(" → " + r.point + " after "), std::string::npos);
        }
    }
    EXPECT_EQ(journeys.size(), 40U);  // README: 2 × (5 + 5) echoes and 2 × (5 + 5) datagrams

    // Bytes as tshark reads them (frame_raw of -T json -x) against packets.raw.
    const auto json = test::run_command("tshark -n -r '" + path + "' -T json -x 2>/dev/null");
    ASSERT_TRUE(json);
    const auto parsed = nlohmann::json::parse(*json);
    ASSERT_EQ(parsed.size(), rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) {
        std::string hex;
        for (std::uint8_t b : rows[k].raw) {
            static constexpr char k_digits[] = "0123456789abcdef";
            hex += k_digits[b >> 4];
            hex += k_digits[b & 15];
        }
        EXPECT_EQ(parsed[k]["_source"]["layers"]["frame_raw"][0].get<std::string>(), hex) << "frame " << k + 1;
    }
}

// conntrack -L lines (tests/data/lab/conntrack.txt): original source and id/port, masqueraded source and id/port.
struct KernelNat {
    std::string proto, src, port, nat_src, nat_port;
};

// Each line: "icmp 1 27 src=A dst=B type=8 code=0 id=I  src=B dst=NAT type=0 code=0 id=J" (the original tuple,
// then the reply tuple); udp lines carry sport=/dport= instead of id=.
std::vector<KernelNat> conntrack_entries() {
    std::ifstream in(k_lab + "conntrack.txt");
    std::vector<KernelNat> out;
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line);
        std::string proto;
        words >> proto;
        if (proto != "icmp" && proto != "udp") continue;
        std::map<std::string, std::vector<std::string>> values;  // key -> values in line order
        for (std::string w; words >> w;) {
            const auto eq = w.find('=');
            if (eq != std::string::npos) values[w.substr(0, eq)].push_back(w.substr(eq + 1));
        }
        const auto& ports = proto == "icmp" ? values["id"] : values["sport"];
        const auto& reply_ports = proto == "icmp" ? values["id"] : values["dport"];
        if (values["src"].size() != 2 || values["dst"].size() != 2 || ports.empty() || reply_ports.size() != 2)
            continue;
        out.push_back({proto, values["src"][0], ports[0], values["dst"][1], reply_ports[1]});
    }
    return out;
}

// Each comment's rewrite is what the kernel's conntrack entry says masquerade did: forward packets rewritten
// between docker0 and the uplink (source, and id/port where the kernel changed it), replies back between
// the uplink and docker0; no other hop rewrites anything.
TEST(ExportLab, comments_name_the_rewrites_the_kernel_made) {
    const auto db = lab_db();
    TempDir dir;
    const std::string path = export_to(db, dir, "lab.pcapng");
    const test::Walked w = test::walk_pcapng(path);
    ASSERT_EQ(w.error, "");
    const auto kernel = conntrack_entries();
    ASSERT_EQ(kernel.size(), 4U);

    // flow id -> conntrack entry, by the flow's original tuple
    std::map<std::int64_t, const KernelNat*> nat;
    auto fq = db.prepare("SELECT id, proto, orig_src, orig_sport FROM flows");
    while (fq.step()) {
        for (const KernelNat& k : kernel) {
            const std::string proto = fq.column_int(1) == 1 ? "icmp" : "udp";
            if (k.proto == proto && k.src == fq.column_text(2) && k.port == std::to_string(fq.column_int(3)))
                nat[fq.column_int(0)] = &k;
        }
    }
    ASSERT_EQ(nat.size(), 4U);

    const auto rows = db_rows(db);
    ASSERT_EQ(w.packets.size(), rows.size());
    int rewrites = 0;
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const Row& r = rows[k];
        const std::string& comment = w.packets[k].comments.at(0);
        SCOPED_TRACE(comment);
        if (!r.journey) continue;
        const KernelNat& n = *nat.at(r.flow);
        const std::string port_field = n.proto == "icmp" ? "id" : (r.direction == "forward" ? "sport" : "dport");
        std::string want;
        if (r.direction == "forward" && r.point == "uplink") {
            want = "; rewrote src " + n.src + " → " + n.nat_src;
            if (n.port != n.nat_port) want += ", " + port_field + " " + n.port + " → " + n.nat_port;
        } else if (r.direction == "reply" && r.point == "docker0") {
            want = "; rewrote dst " + n.nat_src + " → " + n.src;
            if (n.port != n.nat_port) want += ", " + port_field + " " + n.nat_port + " → " + n.port;
        }
        const auto at = comment.find("; rewrote ");
        EXPECT_EQ(at == std::string::npos ? "" : comment.substr(at), want);
        rewrites += !want.empty();
    }
    EXPECT_EQ(rewrites, 40);  // every journey is rewritten once: 20 forward at the uplink, 20 replies at docker0
}

TEST(ExportLab, flow_filter_exports_only_the_selected_flows) {
    const auto db = lab_db();
    TempDir dir;
    const auto kernel = conntrack_entries();
    std::string c2_udp_nat_port;
    for (const auto& k : kernel)
        if (k.proto == "udp" && k.src == "172.17.0.3") c2_udp_nat_port = k.nat_port;
    ASSERT_FALSE(c2_udp_nat_port.empty());

    struct Case {
        std::string expr;
        std::string where;  // the same selection in SQL, over the flows table
    };
    const std::vector<Case> cases{
        {"proto icmp", "WHERE j.flow_id IN (SELECT id FROM flows WHERE proto = 1)"},
        {"udp host 172.17.0.3",
         "WHERE j.flow_id IN (SELECT id FROM flows WHERE proto = 17 AND orig_src = '172.17.0.3')"},
        {"port " + c2_udp_nat_port,
         "WHERE j.flow_id IN (SELECT id FROM flows WHERE trans_sport = " + c2_udp_nat_port + ")"},
        {"flow 2", "WHERE j.flow_id = 2"},
        {"proto tcp", "WHERE 0"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.expr);
        auto filter = FlowFilter::parse(c.expr);
        ASSERT_TRUE(filter) << filter.error();
        const std::string path = dir.file("filtered.pcapng");
        const auto s = export_pcapng(db, path, {"hoptrace test", *filter});
        ASSERT_TRUE(s) << s.error();
        const auto rows = db_rows(db, c.where);
        EXPECT_EQ(s->packets, rows.size());
        EXPECT_EQ(s->interfaces, 6U);  // every point is described, with packets or not
        EXPECT_EQ(s->flows, 4U);
        const test::Walked w = test::walk_pcapng(path);
        ASSERT_EQ(w.error, "");
        ASSERT_EQ(w.packets.size(), rows.size());
        for (std::size_t k = 0; k < rows.size(); ++k) {
            EXPECT_EQ(w.packets[k].timestamp, static_cast<std::uint64_t>(rows[k].ts_ns));
            EXPECT_EQ(w.packets[k].comments.at(0).rfind(expected_journey_prefix(rows[k]), 0), 0U);
        }
        EXPECT_NE(w.section_options.at(1).at(0).find("flows: " + filter->to_string()), std::string::npos);
    }
    // Independent of the SQL above: tshark sees only ICMP echo in the "proto icmp" export, 80 frames (README:
    // 2 containers × 10 echo packets × 4 points).
    if (!test::have_tool("tshark")) return;
    const std::string path = dir.file("icmp.pcapng");
    ASSERT_TRUE(export_pcapng(db, path, {"t", *FlowFilter::parse("proto icmp")}));
    const auto all = test::tshark_fields(path, {"frame.number"});
    const auto echo = test::tshark_fields(path, {"frame.number"}, "icmp.type == 8 || icmp.type == 0");
    ASSERT_TRUE(all && echo);
    EXPECT_EQ(all->size(), 80U);
    EXPECT_EQ(echo->size(), 80U);
}

// Why a packet is in no journey, read from its stored fields: here packets of the lab changed in the database the
// way other captures store them (the export reads the store, never the bytes).
TEST(ExportLab, packets_in_no_journey_say_why) {
    auto db = lab_db();
    auto first_of = [&](const std::string& where) {
        auto q = db.prepare("SELECT id FROM packets WHERE " + where + " ORDER BY id LIMIT 1");
        EXPECT_TRUE(q.step()) << where;
        return q.column_int(0);
    };
    const std::int64_t broadcast = first_of("journey_id IS NOT NULL AND proto = 17");
    const std::int64_t late = first_of("journey_id IS NOT NULL AND proto = 1");
    const std::int64_t cut = first_of("flags & 4");
    db.exec("UPDATE packets SET journey_id = NULL, hop = NULL, dst = '255.255.255.255' WHERE id = " +
            std::to_string(broadcast));
    db.exec("UPDATE packets SET journey_id = NULL, hop = NULL WHERE id = " + std::to_string(late));
    db.exec("UPDATE packets SET flags = 1, ip_version = 0, fingerprint = 0 WHERE id = " + std::to_string(cut));
    TempDir dir;
    const std::string path = export_to(db, dir, "lab.pcapng");
    const test::Walked w = test::walk_pcapng(path);
    ASSERT_EQ(w.error, "");
    const auto rows = db_rows(db);
    ASSERT_EQ(w.packets.size(), rows.size());
    std::map<std::int64_t, std::string> comment;
    for (std::size_t k = 0; k < rows.size(); ++k) comment[rows[k].id] = w.packets[k].comments.at(0);
    EXPECT_EQ(comment[broadcast], "not matched (multicast or broadcast: copied to every port, not one packet's path)");
    EXPECT_EQ(comment[late], "not matched (not correlated: stored after the last 'hoptrace correlate')");
    EXPECT_EQ(comment[cut], "not matched (truncated before the IP header)");
}

TEST(ExportLab, an_unwritable_output_is_one_line_naming_it) {
    const auto db = lab_db();
    TempDir dir;
    const std::string path = dir.file("missing/out.pcapng");
    const auto s = export_pcapng(db, path, {"t", std::nullopt});
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), path + ": cannot create: No such file or directory");
}

// tests/data/c2c (see its README): c1 → c2 on one bridge, with the roles a live capture gives the points. The
// bridge's sightings of c1↔c2 frames are observers (hop NULL): commented as such, and no hop counts them.
TEST(ExportC2c, a_bridge_that_switched_a_frame_is_commented_as_its_observer) {
    const std::string dir_c2c = std::string(HOPTRACE_TEST_DATA) + "/c2c/";
    auto db = store::Database::open_memory();
    {
        store::Writer writer(db);
        for (const auto& [name, file] : k_files) {
            const auto r = store::import_file(db, writer, {name, dir_c2c + file, {}});
            ASSERT_FALSE(r.error) << *r.error;
        }
        writer.close();
    }
    db.exec(
        "UPDATE points SET role = 'container' WHERE name IN ('c1-eth0', 'c2-eth0');"
        "UPDATE points SET role = 'veth' WHERE name IN ('c1-veth', 'c2-veth');"
        "UPDATE points SET role = 'bridge' WHERE name = 'docker0'; UPDATE points SET role = 'uplink' WHERE name = 'uplink';");
    correlate::run(db);
    std::set<std::int64_t> observers;
    std::map<std::int64_t, std::int64_t> path_length;  // journey -> sightings with a hop
    {
        auto q = db.prepare("SELECT id FROM packets WHERE journey_id IS NOT NULL AND hop IS NULL");
        while (q.step()) observers.insert(q.column_int(0));
        auto l = db.prepare("SELECT journey_id, count(hop) FROM packets WHERE journey_id IS NOT NULL GROUP BY journey_id");
        while (l.step()) path_length[l.column_int(0)] = l.column_int(1);
    }
    EXPECT_EQ(observers.size(), 34U);  // README: docker0 saw 24 TCP and 10 ICMP frames between c1 and c2
    TempDir dir;
    const test::Walked w = test::walk_pcapng(export_to(db, dir, "c2c.pcapng"));
    ASSERT_EQ(w.error, "");
    const auto rows = db_rows(db);
    ASSERT_EQ(w.packets.size(), rows.size());
    std::size_t observed = 0;
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const Row& r = rows[k];
        if (!r.journey) continue;
        const std::string& comment = w.packets[k].comments.at(0);
        const std::string journey =
            "journey " + std::to_string(*r.journey) + " (flow " + std::to_string(r.flow) + ", " + r.direction + ")";
        if (observers.contains(r.id)) {
            EXPECT_EQ(r.point, "docker0");
            EXPECT_EQ(comment, journey + ": observed at docker0, which switched it between two of its ports "
                                         "(bridge-local, not a hop)");
            ++observed;
        } else {
            EXPECT_EQ(comment.rfind(journey + ", hop " + std::to_string(r.hop + 1) + " of " +
                                        std::to_string(path_length.at(*r.journey)) + ": ",
                                    0),
                      0U)
                << comment;
        }
    }
    EXPECT_EQ(observed, observers.size());
}

}  // namespace
}  // namespace hoptrace::report
