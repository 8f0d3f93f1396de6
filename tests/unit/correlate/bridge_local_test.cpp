// Container to container on one bridge: real captures of tests/data/c2c (c1 pings c2, uploads 64 KiB to c2 over
// TCP and pings the server through the uplink, captured at all six points; see its README). With the roles a
// live capture gives its points, the bridge is an observer of c1↔c2 traffic, not a hop between the veths.
// Expectations come from outside hoptrace: the README's tshark counts, and libpcap's own reading of the files
// (timestamps; addresses at the fixed offsets of Ethernet + IPv4).

#include "correlate/analysis.hpp"
#include "correlate/correlate.hpp"
#include "report/csv.hpp"
#include "report/text.hpp"
#include "report_support.hpp"
#include "store/import.hpp"

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <algorithm>
#include <array>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

namespace hoptrace {
namespace {

using Json = nlohmann::ordered_json;

const std::string k_c2c = std::string(HOPTRACE_TEST_DATA) + "/c2c/";
const std::vector<std::pair<std::string, std::string>> k_files{{"c1-eth0", "c1-eth0.pcap"}, {"c1-veth", "c1-veth.pcap"},
                                                               {"c2-eth0", "c2-eth0.pcap"}, {"c2-veth", "c2-veth.pcap"},
                                                               {"docker0", "docker0.pcap"}, {"uplink", "uplink.pcap"}};
const std::string k_c1 = "172.17.0.2";
const std::string k_c2 = "172.17.0.3";

void import(store::Database& db) {
    store::Writer writer(db);
    for (const auto& [name, file] : k_files) {
        const auto r = store::import_file(db, writer, {name, k_c2c + file, {}});
        ASSERT_FALSE(r.error) << *r.error;
    }
    writer.close();
}

// The roles `hoptrace capture --netns c1 --netns c2` gives these points (imported files have none).
void give_roles(store::Database& db) {
    db.exec(
        "UPDATE points SET role = 'container' WHERE name IN ('c1-eth0', 'c2-eth0');"
        "UPDATE points SET role = 'veth' WHERE name IN ('c1-veth', 'c2-veth');"
        "UPDATE points SET role = 'bridge' WHERE name = 'docker0';"
        "UPDATE points SET role = 'uplink' WHERE name = 'uplink';");
}

report::ReportModel correlated_model(bool roles) {
    auto db = store::Database::open_memory();
    import(db);
    if (roles) give_roles(db);
    correlate::run(db);
    return report::load_report(db);
}

Json correlated_report(bool roles) { return report::to_json(correlated_model(roles)); }

const Json* find_flow(const Json& report, const std::string& proto, const std::string& dst, std::int64_t port_or_id) {
    for (const Json& f : report["flows"]) {
        if (f["proto"] != proto || f["original"]["src"] != k_c1 || f["original"]["dst"] != dst) continue;
        const Json& port = proto == "tcp" ? f["original"]["dport"] : f["original"]["id"];
        if (port == port_or_id) return &f;
    }
    return nullptr;
}

std::vector<std::string> names(const Json& list) {
    std::vector<std::string> out;
    for (const Json& n : list) out.push_back(n.get<std::string>());
    return out;
}

// One IPv4 frame as libpcap reads it: timestamp, protocol and addresses at Ethernet + IPv4's fixed offsets.
struct Frame {
    std::int64_t ts_ns = 0;
    int proto = 0;
    std::string src;
    std::string dst;
};

std::vector<Frame> ipv4_frames(const std::string& file) {
    std::array<char, PCAP_ERRBUF_SIZE> err{};
    pcap_t* p = pcap_open_offline_with_tstamp_precision((k_c2c + file).c_str(), PCAP_TSTAMP_PRECISION_NANO, err.data());
    EXPECT_NE(p, nullptr) << err.data();
    std::vector<Frame> out;
    if (p == nullptr) return out;
    pcap_pkthdr* h = nullptr;
    const u_char* b = nullptr;
    auto addr = [&](int at) {
        return std::to_string(b[at]) + "." + std::to_string(b[at + 1]) + "." + std::to_string(b[at + 2]) + "." +
               std::to_string(b[at + 3]);
    };
    while (pcap_next_ex(p, &h, &b) == 1) {
        if (h->caplen < 34 || b[12] != 0x08 || b[13] != 0x00) continue;
        out.push_back({std::int64_t{h->ts.tv_sec} * 1'000'000'000 + h->ts.tv_usec, b[23], addr(26), addr(30)});
    }
    pcap_close(p);
    return out;
}

// Timestamps of the frames of `proto` from `src` to `dst` in a file, in capture order.
std::vector<std::int64_t> times(const std::string& point, int proto, const std::string& src, const std::string& dst) {
    std::string file;
    for (const auto& [name, f] : k_files)
        if (name == point) file = f;
    std::vector<std::int64_t> out;
    for (const Frame& f : ipv4_frames(file))
        if (f.proto == proto && f.src == src && f.dst == dst) out.push_back(f.ts_ns);
    return out;
}

TEST(BridgeLocal, container_to_container_reads_four_points_with_the_bridge_as_observer) {
    const Json report = correlated_report(true);
    struct Case {
        std::string proto;
        std::int64_t port_or_id;
        std::int64_t forward, reply;  // the README's tshark counts
    };
    for (const Case& c : {Case{"tcp", 5001, 13, 11}, Case{"icmp", 4242, 5, 5}}) {
        SCOPED_TRACE(c.proto);
        const Json* f = find_flow(report, c.proto, k_c2, c.port_or_id);
        ASSERT_NE(f, nullptr);
        EXPECT_EQ(names((*f)["path"]), (std::vector<std::string>{"c1-eth0", "c1-veth", "c2-veth", "c2-eth0"}));
        EXPECT_EQ((*f)["translated"], (*f)["original"]);
        EXPECT_TRUE((*f)["rewrites"].empty());
        EXPECT_TRUE((*f)["lost"].empty());
        EXPECT_EQ((*f)["forward_journeys"], c.forward);
        EXPECT_EQ((*f)["reply_journeys"], c.reply);
        EXPECT_EQ((*f)["packets"], 5 * (c.forward + c.reply));  // every packet at all five points
        const Json want_observers = Json::array(
            {{{"point", "docker0"},
              {"direction", "forward"},
              {"count", c.forward},
              {"between", {"c1-veth", "c2-veth"}}},
             {{"point", "docker0"}, {"direction", "reply"}, {"count", c.reply}, {"between", {"c2-veth", "c1-veth"}}}});
        EXPECT_EQ((*f)["observers"], want_observers);
        std::vector<std::string> hops;
        for (const Json& h : (*f)["hops"]) {
            hops.push_back(h["direction"].get<std::string>() + " " + h["from"].get<std::string>() + ">" +
                           h["to"].get<std::string>());
            EXPECT_EQ(h["count"], h["direction"] == "forward" ? c.forward : c.reply);
            EXPECT_GE(h["min_ns"].get<std::int64_t>(), 0);
        }
        // Along the flow's own path, each direction from where it starts.
        EXPECT_EQ(hops, (std::vector<std::string>{"forward c1-eth0>c1-veth", "forward c1-veth>c2-veth",
                                                  "forward c2-veth>c2-eth0", "reply c2-eth0>c2-veth",
                                                  "reply c2-veth>c1-veth", "reply c1-veth>c1-eth0"}));
    }
}

TEST(BridgeLocal, hop_latencies_are_the_pcap_timestamp_differences_between_the_points) {
    const Json report = correlated_report(true);
    for (const auto& [proto_name, proto, port] : {std::tuple{"tcp", 6, 5001}, std::tuple{"icmp", 1, 4242}}) {
        const Json* f = find_flow(report, proto_name, k_c2, port);
        ASSERT_NE(f, nullptr);
        ASSERT_EQ((*f)["hops"].size(), 6U);
        for (const Json& h : (*f)["hops"]) {
            const bool forward = h["direction"] == "forward";
            const std::string src = forward ? k_c1 : k_c2;
            const std::string dst = forward ? k_c2 : k_c1;
            const auto a = times(h["from"].get<std::string>(), proto, src, dst);
            const auto b = times(h["to"].get<std::string>(), proto, src, dst);
            SCOPED_TRACE(std::string(proto_name) + " " + h["from"].get<std::string>() + " → " +
                         h["to"].get<std::string>());
            ASSERT_EQ(a.size(), b.size());
            ASSERT_EQ(static_cast<std::int64_t>(a.size()), h["count"].get<std::int64_t>());
            std::vector<std::int64_t> dt;
            for (std::size_t k = 0; k < a.size(); ++k) dt.push_back(b[k] - a[k]);
            ASSERT_FALSE(dt.empty());
            std::sort(dt.begin(), dt.end());
            EXPECT_GE(dt.front(), 0);
            EXPECT_EQ(h["min_ns"].get<std::int64_t>(), dt.front());
            EXPECT_EQ(h["p50_ns"].get<std::int64_t>(), correlate::percentile(dt, 50));
            EXPECT_EQ(h["max_ns"].get<std::int64_t>(), dt.back());
        }
    }
}

TEST(BridgeLocal, traffic_through_the_uplink_in_the_same_capture_keeps_its_path_rewrite_and_no_loss) {
    const Json report = correlated_report(true);
    const Json* ping = find_flow(report, "icmp", "198.51.100.10", 4343);
    ASSERT_NE(ping, nullptr);
    EXPECT_EQ(names((*ping)["path"]), (std::vector<std::string>{"c1-eth0", "c1-veth", "docker0", "uplink"}));
    EXPECT_EQ((*ping)["forward_journeys"], 5);
    EXPECT_EQ((*ping)["reply_journeys"], 5);
    EXPECT_TRUE((*ping)["observers"].empty());
    std::set<std::string> rewrites;
    for (const Json& r : (*ping)["rewrites"])
        rewrites.insert(r["direction"].get<std::string>() + " " + r["field"].get<std::string>() + " " +
                        r["from"].get<std::string>() + ">" + r["to"].get<std::string>() + " " +
                        r["between"][0].get<std::string>() + ">" + r["between"][1].get<std::string>());
    EXPECT_EQ(rewrites, (std::set<std::string>{"forward src 172.17.0.2>192.168.43.116 docker0>uplink",
                                               "reply dst 192.168.43.116>172.17.0.2 uplink>docker0"}));
    for (const Json& f : report["flows"]) EXPECT_TRUE(f["lost"].empty()) << f["id"];
    // Points in path order: the containers innermost, then their veths, the bridge, the uplink.
    std::vector<std::string> order;
    for (const Json& p : report["points"]) order.push_back(p["name"].get<std::string>());
    ASSERT_EQ(order.size(), 6U);
    EXPECT_EQ(std::set<std::string>(order.begin(), order.begin() + 2), (std::set<std::string>{"c1-eth0", "c2-eth0"}));
    EXPECT_EQ(std::set<std::string>(order.begin() + 2, order.begin() + 4),
              (std::set<std::string>{"c1-veth", "c2-veth"}));
    EXPECT_EQ(order[4], "docker0");
    EXPECT_EQ(order[5], "uplink");
}

TEST(BridgeLocal, observers_stay_in_their_journey_without_a_hop) {
    auto db = store::Database::open_memory();
    import(db);
    give_roles(db);
    correlate::run(db);
    {  // Every c1↔c2 frame docker0 saw (README: 24 TCP, 10 ICMP) is an observer of a journey of five sightings.
        auto q = db.prepare(
            "SELECT count(*), min(j.sightings), max(j.sightings), count(DISTINCT j.id) FROM packets p "
            "JOIN journeys j ON j.id = p.journey_id JOIN points c ON c.id = p.point_id WHERE p.hop IS NULL AND "
            "c.name = 'docker0'");
        ASSERT_TRUE(q.step());
        EXPECT_EQ(q.column_int(0), 34);
        EXPECT_EQ(q.column_int(1), 5);
        EXPECT_EQ(q.column_int(2), 5);
        EXPECT_EQ(q.column_int(3), 34);
        auto others = db.prepare("SELECT count(*) FROM packets p WHERE p.journey_id IS NOT NULL AND p.hop IS NULL");
        ASSERT_TRUE(others.step());
        EXPECT_EQ(others.column_int(0), 34);
    }  // statements finished: correlate may write again
    // The CSV of hop samples has none through the bridge for them: 34 journeys × 3 hops, 10 pings × 3.
    std::ostringstream csv;
    report::write_csv(db, csv);
    std::size_t rows = 0;
    for (std::size_t at = csv.str().find('\n'); at != std::string::npos; at = csv.str().find('\n', at + 1)) ++rows;
    EXPECT_EQ(rows - 1, 34U * 3 + 10U * 3);
    // Correlating again gives the same.
    const std::string first = report::render_json(report::load_report(db));
    correlate::run(db);
    EXPECT_EQ(report::render_json(report::load_report(db)), first);
}

TEST(BridgeLocal, text_report_says_the_bridge_saw_it_cross) {
    const std::string text = report::render_text(correlated_model(true));
    std::string folded;  // the narrative wraps lines
    for (char c : text) {
        if (c == '\n') c = ' ';
        if (c == ' ' && !folded.empty() && folded.back() == ' ') continue;
        folded += c;
    }
    EXPECT_NE(folded.find("crossed docker0 (bridge-local, no NAT) to c2-veth"), std::string::npos) << text;
    EXPECT_NE(folded.find("observed by docker0 (bridge-local: switched between c1-veth and c2-veth, not a hop): 13 "
                          "forward, 11 reply"),
              std::string::npos)
        << text;
}

TEST(BridgeLocal, the_html_path_diagram_draws_both_containers_paths_to_the_bridge) {
    auto db = store::Database::open_memory();
    import(db);
    give_roles(db);
    correlate::run(db);
    const std::string html = test::html_page(db);
    // Edges of the diagram, from their titles: "<path class="edge" …><title>A → B: N flows</title>".
    std::set<std::string> edges;
    const std::regex edge(R"re(<path class="edge"[^>]*><title>([^<:]+):)re");
    for (auto it = std::sregex_iterator(html.begin(), html.end(), edge); it != std::sregex_iterator(); ++it)
        edges.insert((*it)[1]);
    EXPECT_EQ(edges, (std::set<std::string>{"c1-eth0 → c1-veth", "c1-veth → docker0", "c2-eth0 → c2-veth",
                                            "c2-veth → docker0", "docker0 → uplink"}));
    EXPECT_NE(html.find("observed by docker0 (bridge-local, not a hop)"), std::string::npos);
}

TEST(BridgeLocal, imported_files_without_roles_get_the_roles_a_live_capture_has) {
    // Nothing in the files says which point is what: the roles are inferred from the names and the traffic, and
    // must be the ones topology discovery gives these points live (give_roles), so the journeys read the same.
    auto db = store::Database::open_memory();
    import(db);
    const correlate::Summary summary = correlate::run(db);
    std::map<std::string, std::string> roles;
    for (const store::Point& p : db.points()) roles[p.name] = p.role;
    EXPECT_EQ(roles, (std::map<std::string, std::string>{{"c1-eth0", "container"}, {"c1-veth", "veth"},
                                                        {"c2-eth0", "container"}, {"c2-veth", "veth"},
                                                        {"docker0", "bridge"}, {"uplink", "uplink"}}));
    EXPECT_EQ(summary.inferred.size(), 6U);
    EXPECT_EQ(summary.ambiguous, 0U);
    const Json report = test::report_json(db);
    const Json* tcp = find_flow(report, "tcp", k_c2, 5001);
    ASSERT_NE(tcp, nullptr);
    EXPECT_EQ((*tcp)["forward_journeys"], 13);  // the README's tshark counts
    EXPECT_EQ((*tcp)["reply_journeys"], 11);
    EXPECT_EQ(names((*tcp)["path"]), (std::vector<std::string>{"c1-eth0", "c1-veth", "c2-veth", "c2-eth0"}));
    EXPECT_FALSE((*tcp)["observers"].empty());
    EXPECT_TRUE((*tcp)["rewrites"].empty());
}

// Hand-built sightings: a frame routed from one bridge to another (c1 on docker0 to c3 on a user-defined
// network) crosses two veths too, but the host routed it (TTL 64 → 63): both bridges are hops.
TEST(BridgeLocal, a_frame_routed_between_two_bridges_has_no_observer) {
    using namespace correlate;
    const Tuple t{17, IpAddr::parse("172.17.0.2").value(), IpAddr::parse("172.18.0.2").value(), 4000, 53};
    // Points: 1 c1 eth0, 2 its veth, 3 docker0, 4 br-net, 5 c3's veth, 6 c3 eth0.
    MatchOptions options;
    options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 2}, {5, 1}, {6, 0}};
    options.container_points = {1, 6};
    std::vector<Sighting> sightings;
    const std::array<std::pair<std::uint32_t, std::uint8_t>, 6> seen{
        {{1, 64}, {2, 64}, {3, 64}, {4, 63}, {5, 63}, {6, 63}}};
    for (std::size_t i = 0; i < seen.size(); ++i) {
        Sighting s;
        s.packet_id = static_cast<std::int64_t>(i + 1);
        s.point = seen[i].first;
        s.ttl = seen[i].second;
        s.ts_ns = 1000 + static_cast<std::int64_t>(i) * 100;
        s.fingerprint = 7;
        s.tuple = t;
        sightings.push_back(s);
    }
    Journeys j = match(sightings, options);
    const Analysis a = analyse(sightings, j, options);
    ASSERT_EQ(j.count(), 1U);
    EXPECT_EQ(j.of(0).size(), 6U);
    EXPECT_TRUE(a.observers.of(0).empty());
    EXPECT_EQ(a.hops.size(), 10U);  // 5 hops, per flow and for all flows
    // The same frame switched by one bridge (TTL unchanged at both ports): the bridge is an observer.
    for (Sighting& s : sightings) s.ttl = 64;
    sightings.erase(sightings.begin() + 3);  // no second bridge
    Journeys k = match(sightings, options);
    const Analysis b = analyse(sightings, k, options);
    ASSERT_EQ(k.count(), 1U);
    ASSERT_EQ(b.observers.of(0).size(), 1U);
    EXPECT_EQ(sightings[b.observers.of(0)[0]].point, 3U);
    EXPECT_EQ(k.of(0).size(), 4U);
}

// Hand-built sightings: five datagrams c1 → c2 on one bridge, the third seen by docker0 but never forwarded to
// c2's veth (a bridge netfilter drop, say). The flow is bridge-local, so docker0 is no hop of that journey
// either: it is lost after c1's veth, expected at c2's.
TEST(BridgeLocal, a_frame_the_bridge_did_not_forward_is_lost_after_the_ingress_port) {
    using namespace correlate;
    const Tuple t{17, IpAddr::parse("172.17.0.2").value(), IpAddr::parse("172.17.0.3").value(), 4000, 8125};
    // Points: 1 c1 eth0, 2 c1's veth, 3 docker0, 4 the uplink, 5 c2 eth0, 6 c2's veth.
    MatchOptions options;
    options.role_rank = {{1, 0}, {2, 1}, {3, 2}, {4, 3}, {5, 0}, {6, 1}};
    options.container_points = {1, 5};
    options.capture_start_ns = 1;
    options.capture_stop_ns = 900'000'000;
    std::vector<Sighting> sightings;
    auto add = [&](std::uint32_t point, std::int64_t ts, std::uint64_t fp) {
        Sighting s;
        s.packet_id = static_cast<std::int64_t>(sightings.size() + 1);
        s.point = point;
        s.ts_ns = ts;
        s.fingerprint = fp;
        s.ttl = 64;
        s.tuple = t;
        sightings.push_back(s);
    };
    for (int n = 0; n < 5; ++n) {
        const std::int64_t at = n * 10'000'000LL;
        const auto fp = static_cast<std::uint64_t>(100 + n);
        add(1, at, fp), add(2, at + 1000, fp), add(3, at + 1000, fp);  // docker0 reuses the ingress stamp
        if (n == 2) continue;
        add(6, at + 3000, fp), add(5, at + 4000, fp);
    }
    Journeys j = match(sightings, options);
    const Analysis a = analyse(sightings, j, options);
    ASSERT_EQ(j.count(), 5U);
    ASSERT_EQ(a.flows.size(), 1U);
    EXPECT_EQ(a.flows[0].packets, 23U);  // every sighting, docker0's included
    for (std::size_t k = 0; k < j.count(); ++k) {
        ASSERT_EQ(a.observers.of(k).size(), 1U) << "journey " << k;
        EXPECT_EQ(sightings[a.observers.of(k)[0]].point, 3U);
        for (const std::uint32_t m : j.of(k)) EXPECT_NE(sightings[m].point, 3U) << "docker0 on journey " << k;
    }
    ASSERT_EQ(a.losses.size(), 1U);
    EXPECT_EQ(a.losses[0].after_point, 2U);
    EXPECT_EQ(a.losses[0].expected_point, 6U);
    EXPECT_EQ(a.losses[0].count, 1U);
    for (const HopStats& h : a.hops) EXPECT_NE(h.to_point, 3U);
}

}  // namespace
}  // namespace hoptrace
