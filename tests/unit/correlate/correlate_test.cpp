// Correlation of real captures: tests/data/lab (tcpdump at every point of two containers' paths while both
// ping the server with the same ICMP id and send UDP from the same source port; see its README).
// Expectations come from outside hoptrace: conntrack.txt (the kernel's NAT), libpcap's own reading of the
// files (timestamps), host-links.txt (interface indexes).

#include "correlate/correlate.hpp"
#include "report/csv.hpp"
#include "report/text.hpp"
#include "report_support.hpp"
#include "store/import.hpp"

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <array>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace hoptrace {
namespace {

const std::string k_lab = std::string(HOPTRACE_TEST_DATA) + "/lab/";

using Json = nlohmann::ordered_json;

void import(store::Database& db, const std::vector<std::pair<std::string, std::string>>& files,
            std::map<std::uint32_t, std::string> link_names = {}) {
    store::Writer writer(db);
    for (const auto& [name, file] : files) {
        const auto r = store::import_file(db, writer, {name, k_lab + file, link_names});
        ASSERT_FALSE(r.error) << *r.error;
    }
    writer.close();
}

const std::vector<std::pair<std::string, std::string>> k_per_interface{
    {"c1-eth0", "c1-eth0.pcap"}, {"c1-veth", "c1-veth.pcap"}, {"c2-eth0", "c2-eth0.pcap"},
    {"c2-veth", "c2-veth.pcap"}, {"docker0", "docker0.pcap"}, {"uplink", "uplink.pcap"}};

// Timestamps of every frame of a file, read by libpcap itself.
std::vector<std::int64_t> pcap_timestamps(const std::string& path) {
    std::array<char, PCAP_ERRBUF_SIZE> err{};
    pcap_t* p = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, err.data());
    EXPECT_NE(p, nullptr) << err.data();
    std::vector<std::int64_t> out;
    if (p == nullptr) return out;
    pcap_pkthdr* h = nullptr;
    const u_char* bytes = nullptr;
    while (pcap_next_ex(p, &h, &bytes) == 1) out.push_back(std::int64_t{h->ts.tv_sec} * 1'000'000'000 + h->ts.tv_usec);
    pcap_close(p);
    return out;
}

struct KernelNat {
    std::string proto, src, sport_or_id, nat_src, nat_sport_or_id;
};

// conntrack -L lines: the original tuple first, the reply tuple second.
std::vector<KernelNat> conntrack_entries() {
    std::ifstream in(k_lab + "conntrack.txt");
    std::vector<KernelNat> out;
    const std::regex icmp(R"(^icmp .*?src=(\S+) dst=\S+ type=8 code=0 id=(\d+)\s+src=\S+ dst=(\S+) type=0 code=0 id=(\d+))");
    const std::regex udp(R"(^udp .*?src=(\S+) dst=\S+ sport=(\d+) dport=\d+\s+src=\S+ dst=(\S+) sport=\d+ dport=(\d+))");
    for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_search(line, m, icmp)) out.push_back({"icmp", m[1], m[2], m[3], m[4]});
        else if (std::regex_search(line, m, udp)) out.push_back({"udp", m[1], m[2], m[3], m[4]});
    }
    return out;
}

const Json* flow_from(const Json& report, const std::string& proto, const std::string& src) {
    for (const Json& f : report["flows"])
        if (f["proto"] == proto && f["original"]["src"] == src) return &f;
    return nullptr;
}

TEST(CorrelateLab, rewrites_match_the_kernels_conntrack_entries) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    const Json report = test::report_json(db);
    const auto kernel = conntrack_entries();
    ASSERT_EQ(kernel.size(), 4U) << "conntrack.txt: expected 2 ICMP and 2 UDP entries";
    for (const KernelNat& k : kernel) {
        SCOPED_TRACE(k.proto + " from " + k.src);
        const Json* f = flow_from(report, k.proto, k.src);
        ASSERT_NE(f, nullptr);
        const std::string port_key = k.proto == "icmp" ? "id" : "sport";
        EXPECT_EQ((*f)["translated"]["src"], k.nat_src);
        EXPECT_EQ((*f)["translated"][port_key].get<std::int64_t>(), std::stoll(k.nat_sport_or_id));
        EXPECT_EQ((*f)["forward_journeys"], 5);
        EXPECT_EQ((*f)["reply_journeys"], 5);
        EXPECT_TRUE((*f)["lost"].empty());

        std::set<std::string> seen;
        for (const Json& r : (*f)["rewrites"]) {
            EXPECT_EQ(r["between"][0], r["direction"] == "forward" ? "docker0" : "uplink");
            EXPECT_EQ(r["between"][1], r["direction"] == "forward" ? "uplink" : "docker0");
            std::ostringstream line;
            line << r["direction"].get<std::string>() << " " << r["field"].get<std::string>() << " "
                 << (r["from"].is_string() ? r["from"].get<std::string>() : r["from"].dump()) << ">"
                 << (r["to"].is_string() ? r["to"].get<std::string>() : r["to"].dump());
            seen.insert(line.str());
        }
        std::set<std::string> expected{"forward src " + k.src + ">" + k.nat_src, "reply dst " + k.nat_src + ">" + k.src};
        if (k.sport_or_id != k.nat_sport_or_id) {  // the second container's id/port clashed and was rewritten
            const std::string field = k.proto == "icmp" ? "id" : "sport";
            const std::string reply_field = k.proto == "icmp" ? "id" : "dport";
            expected.insert("forward " + field + " " + k.sport_or_id + ">" + k.nat_sport_or_id);
            expected.insert("reply " + reply_field + " " + k.nat_sport_or_id + ">" + k.sport_or_id);
        }
        EXPECT_EQ(seen, expected);
    }
}

TEST(CorrelateLab, every_journey_crosses_all_four_points_of_its_container) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    const auto summary = correlate::run(db);
    EXPECT_EQ(summary.journeys, 40U);  // 2 containers × (5 pings + 5 UDP) × (request + reply)
    auto q = db.prepare("SELECT count(*), min(sightings), max(sightings) FROM journeys");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.column_int(0), 40);
    EXPECT_EQ(q.column_int(1), 4);
    EXPECT_EQ(q.column_int(2), 4);
    // No journey mixes the containers' points.
    auto mixed = db.prepare(
        "SELECT count(DISTINCT p.journey_id) FROM packets p JOIN points c ON c.id = p.point_id "
        "WHERE p.journey_id IN (SELECT journey_id FROM packets p2 JOIN points c2 ON c2.id = p2.point_id "
        "WHERE c2.name LIKE 'c1-%') AND c.name LIKE 'c2-%'");
    ASSERT_TRUE(mixed.step());
    EXPECT_EQ(mixed.column_int(0), 0);
}

TEST(CorrelateLab, hop_latencies_are_pcap_timestamp_differences_to_the_nanosecond) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    // Stored timestamps: the k-th packet of a point is the k-th frame libpcap reads from its file.
    std::map<std::string, std::vector<std::int64_t>> truth;
    for (const auto& [name, file] : k_per_interface) truth[name] = pcap_timestamps(k_lab + file);
    std::map<std::int64_t, std::int64_t> true_ts;  // packet id -> libpcap timestamp
    auto q = db.prepare("SELECT p.id, c.name FROM packets p JOIN points c ON c.id = p.point_id ORDER BY c.name, p.id");
    std::map<std::string, std::size_t> index;
    while (q.step()) {
        const std::string name = q.column_text(1);
        const std::size_t k = index[name]++;
        ASSERT_LT(k, truth[name].size());
        true_ts[q.column_int(0)] = truth[name][k];
    }
    // Recompute every hop of every journey from libpcap's timestamps; compare min/max with the hops table.
    std::map<std::tuple<std::int64_t, std::string, std::string, std::string>, std::pair<std::int64_t, std::int64_t>> hops;
    auto j = db.prepare(
        "SELECT a.id, b.id, j.flow_id, j.direction, ca.name, cb.name FROM packets a "
        "JOIN packets b ON b.journey_id = a.journey_id AND b.hop = a.hop + 1 JOIN journeys j ON j.id = a.journey_id "
        "JOIN points ca ON ca.id = a.point_id JOIN points cb ON cb.id = b.point_id");
    std::size_t n = 0;
    while (j.step()) {
        const std::int64_t dt = true_ts.at(j.column_int(1)) - true_ts.at(j.column_int(0));
        auto key = std::tuple{j.column_int(2), j.column_text(3), j.column_text(4), j.column_text(5)};
        auto [it, fresh] = hops.try_emplace(key, dt, dt);
        if (!fresh) it->second = {std::min(it->second.first, dt), std::max(it->second.second, dt)};
        ++n;
    }
    EXPECT_EQ(n, 120U);  // 40 journeys × 3 hops
    auto h = db.prepare(
        "SELECT h.flow_id, h.direction, f.name, t.name, h.min_ns, h.max_ns, h.count FROM hops h "
        "JOIN points f ON f.id = h.from_point JOIN points t ON t.id = h.to_point WHERE h.flow_id IS NOT NULL");
    std::size_t rows = 0;
    while (h.step()) {
        const auto key = std::tuple{h.column_int(0), h.column_text(1), h.column_text(2), h.column_text(3)};
        ASSERT_TRUE(hops.contains(key)) << h.column_text(2) << " → " << h.column_text(3);
        EXPECT_EQ(h.column_int(4), hops[key].first);
        EXPECT_EQ(h.column_int(5), hops[key].second);
        EXPECT_GE(h.column_int(4), 0);
        ++rows;
    }
    EXPECT_EQ(rows, hops.size());
}

// host-links.txt: "N: NAME@peer: <…" lines of `ip -o link`.
std::map<std::uint32_t, std::string> host_links() {
    std::ifstream in(k_lab + "host-links.txt");
    std::map<std::uint32_t, std::string> out;
    const std::regex line_re(R"(^(\d+): ([^:@]+)[@:])");
    for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_search(line, m, line_re)) out[static_cast<std::uint32_t>(std::stoul(m[1]))] = m[2];
    }
    return out;
}

// Journeys as comparable values: (direction, point names in order, hop deltas).
std::multiset<std::string> journeys_of(store::Database& db, const std::map<std::string, std::string>& rename) {
    std::multiset<std::string> out;
    auto q = db.prepare(
        "SELECT p.journey_id, j.direction, c.name, p.ts_ns FROM packets p JOIN journeys j ON j.id = p.journey_id "
        "JOIN points c ON c.id = p.point_id ORDER BY p.journey_id, p.hop");
    std::int64_t current = -1;
    std::int64_t prev_ts = 0;
    std::string text;
    while (q.step()) {
        if (q.column_int(0) != current) {
            if (current >= 0) out.insert(text);
            current = q.column_int(0);
            text = q.column_text(1);
            prev_ts = q.column_int(3);
        }
        const auto it = rename.find(q.column_text(2));
        text += " " + (it == rename.end() ? q.column_text(2) : it->second) + "+" + std::to_string(q.column_int(3) - prev_ts);
        prev_ts = q.column_int(3);
    }
    if (current >= 0) out.insert(text);
    return out;
}

TEST(CorrelateLab, tcpdump_any_in_the_host_gives_the_same_journeys_as_per_interface_files) {
    const auto links = host_links();
    ASSERT_FALSE(links.empty());
    auto any = store::Database::open_memory();
    import(any, {{"c1-eth0", "c1-eth0.pcap"}, {"c2-eth0", "c2-eth0.pcap"}, {"host", "host-any.pcap"}}, links);
    correlate::run(any);
    auto per_interface = store::Database::open_memory();
    import(per_interface, k_per_interface);
    correlate::run(per_interface);

    // Name the per-interface points after the host interfaces they were captured on (README of the data).
    std::map<std::string, std::string> rename;
    for (const auto& [index, name] : links) {
        if (name == "docker0") rename["docker0"] = "host/docker0";
        if (name == "eth0") rename["uplink"] = "host/eth0";
    }
    // The veth names are in the data README: c1's and c2's host-side veths are ifindex 3 and 4.
    rename["c1-veth"] = "host/" + links.at(3);
    rename["c2-veth"] = "host/" + links.at(4);
    EXPECT_EQ(journeys_of(any, {}), journeys_of(per_interface, rename));
    EXPECT_EQ(journeys_of(any, {}).size(), 40U);
}

TEST(CorrelateLab, hop_totals_from_the_samples_equal_the_stored_ones_and_follow_a_flow_selection) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    Json report = test::report_json(db);
    // Recomputed from every hop sample of every flow: the same as what correlate stored for all flows together.
    auto key = [](const Json& h) {
        return h["direction"].get<std::string>() + " " + h["from"].get<std::string>() + ">" + h["to"].get<std::string>();
    };
    std::map<std::string, Json> stored;
    for (const Json& h : report["hop_totals"]) stored[key(h)] = h;
    std::map<std::string, Json> recomputed;
    report::ReportModel all;
    all.hop_totals = report::hop_totals(db, {});
    const Json all_json = report::to_json(all);
    for (const Json& h : all_json["hop_totals"]) recomputed[key(h)] = h;
    EXPECT_EQ(recomputed, stored);
    // One flow selected: its own hop statistics are the totals, and nothing of the other flows is left.
    const Json* c2_udp = flow_from(report, "udp", "172.17.0.3");
    ASSERT_NE(c2_udp, nullptr);
    const std::int64_t id = (*c2_udp)["id"].get<std::int64_t>();
    const Json own = (*c2_udp)["hops"];
    report = test::report_json(db, report::FlowFilter::parse("flow " + std::to_string(id)).value());
    ASSERT_EQ(report["flows"].size(), 1U);
    std::map<std::string, Json> totals;
    for (const Json& h : report["hop_totals"]) totals[key(h)] = h;
    std::map<std::string, Json> flow_hops;
    for (const Json& h : own) flow_hops[key(h)] = h;
    EXPECT_EQ(totals, flow_hops);
    EXPECT_TRUE(report["icmp_errors"].empty());
}

TEST(CorrelateLab, rerunning_correlate_gives_the_same_result) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    const std::string first = report::render_json(report::load_report(db));
    correlate::run(db);
    EXPECT_EQ(report::render_json(report::load_report(db)), first);
}

}  // namespace
}  // namespace hoptrace

namespace hoptrace {
namespace {

TEST(ReportText, each_flow_is_explained_in_words_with_the_kernels_translation) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    const std::string text = report::render_text(report::load_report(db));
    for (const KernelNat& k : conntrack_entries()) {
        SCOPED_TRACE(k.proto + " from " + k.src);
        const std::string translated =
            k.proto == "icmp" ? k.nat_src + " id " + k.nat_sport_or_id : k.nat_src + ":" + k.nat_sport_or_id;
        // The narrative wraps lines: compare with whitespace folded.
        std::string folded;
        for (char c : text) {
            if (c == '\n') c = ' ';
            if (c == ' ' && !folded.empty() && folded.back() == ' ') continue;
            folded += c;
        }
        EXPECT_NE(folded.find("was masqueraded to " + translated + " on uplink"), std::string::npos) << text;
    }
    std::size_t round_trips = 0;
    for (std::size_t at = text.find("5 of 5 packets made"); at != std::string::npos;
         at = text.find("5 of 5 packets made", at + 1))
        ++round_trips;
    EXPECT_EQ(round_trips, 4U);  // every ping and datagram of the 4 flows was answered
}

TEST(ReportCsv, one_row_per_hop_sample_with_its_latency) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    std::ostringstream csv;
    report::write_csv(db, csv);
    std::istringstream in(csv.str());
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, "flow_id,proto,direction,journey_id,from,to,from_ts_ns,to_ts_ns,latency_ns");
    std::size_t rows = 0;
    while (std::getline(in, line)) {
        std::vector<std::string> cells;
        std::istringstream cellstream(line);
        for (std::string c; std::getline(cellstream, c, ',');) cells.push_back(c);
        ASSERT_EQ(cells.size(), 9U) << line;
        EXPECT_EQ(std::stoll(cells[8]), std::stoll(cells[7]) - std::stoll(cells[6]));
        EXPECT_GE(std::stoll(cells[8]), 0);
        ++rows;
    }
    EXPECT_EQ(rows, 120U);  // 40 journeys of 4 sightings: 3 hops each
}

// Hostile point names (a pcapng if_name or a --point name holds any bytes): the JSON stays valid UTF-8, the text
// report shows control characters escaped, and a CSV cell a spreadsheet would run as a formula is neutralised.
TEST(ReportSafety, hostile_point_names_reach_no_terminal_spreadsheet_or_json_parser_raw) {
    auto db = store::Database::open_memory();
    import(db, k_per_interface);
    correlate::run(db);
    const std::string evil = "ev\x1b]0;owned\x07il\nrow\xff";
    const std::string formula = "=HYPERLINK(\"http://x\")";
    {
        const auto points = db.points();
        auto rename = db.prepare("UPDATE points SET name = ?1 WHERE id = ?2");
        rename.bind(1, evil).bind(2, points[0].id);
        rename.run();
        rename.reset();
        rename.bind(1, formula).bind(2, points[1].id);
        rename.run();
    }
    const auto report = report::load_report(db);
    const std::string json = report::render_json(report);
    EXPECT_EQ(json.find('\xff'), std::string::npos);
    EXPECT_NE(json.find("\xef\xbf\xbd"), std::string::npos);  // U+FFFD in place of the invalid byte
    EXPECT_TRUE(nlohmann::json::accept(json));
    const std::string text = report::render_text(report);
    EXPECT_EQ(text.find('\x1b'), std::string::npos);
    EXPECT_EQ(text.find('\x07'), std::string::npos);
    EXPECT_NE(text.find("ev\\x1b]0;owned\\x07il\\nrow"), std::string::npos) << text.substr(0, 600);
    std::ostringstream csv;
    report::write_csv(db, csv);
    EXPECT_EQ(csv.str().find(",\"=HYPERLINK"), std::string::npos);
    EXPECT_NE(csv.str().find(",\"'=HYPERLINK(\"\"http://x\"\")\""), std::string::npos);
}

}  // namespace
}  // namespace hoptrace
