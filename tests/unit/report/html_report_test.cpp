// The HTML report: drawn from the lab captures (tests/data/lab), escaped whatever the points are called, free
// of external URLs, and bounded in size whatever the size of the capture.

#include "correlate/correlate.hpp"
#include "report/format.hpp"
#include "report_support.hpp"
#include "store/import.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

namespace hoptrace {
namespace {

using Json = nlohmann::ordered_json;

const std::string k_lab = std::string(HOPTRACE_TEST_DATA) + "/lab/";

const std::vector<std::string> k_files{"c1-eth0.pcap", "c1-veth.pcap", "c2-eth0.pcap",
                                       "c2-veth.pcap", "docker0.pcap", "uplink.pcap"};

store::Database lab_db(const std::vector<std::string>& names) {
    auto db = store::Database::open_memory();
    store::Writer writer(db);
    for (std::size_t i = 0; i < k_files.size(); ++i) {
        const auto r = store::import_file(db, writer, {names[i], k_lab + k_files[i], {}});
        EXPECT_FALSE(r.error) << *r.error;
    }
    writer.close();
    correlate::run(db);
    return db;
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
    return n;
}

// Every markup tag of the page (text outside tags has no raw '<' once escaped).
std::vector<std::string> tags(const std::string& html) {
    std::vector<std::string> out;
    for (std::size_t pos = html.find('<'); pos != std::string::npos; pos = html.find('<', pos + 1)) {
        const auto end = html.find('>', pos);
        if (end == std::string::npos) break;
        out.push_back(html.substr(pos, end - pos + 1));
    }
    return out;
}

// What inside the one inline <script> is ours, so the checks below look at the rest.
std::string without_script(const std::string& html) {
    const auto a = html.find("<script>");
    const auto b = html.find("</script>");
    if (a == std::string::npos || b == std::string::npos) return html;
    return html.substr(0, a) + html.substr(b + 9);
}

TEST(HtmlEscape, escapes_markup_and_both_quotes) {
    EXPECT_EQ(report::html_escape(R"(<a href="x" title='y'>&amp;</a>)"),
              "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
    EXPECT_EQ(report::html_escape("c1:eth0 → 172.17.0.2 · 12.4 µs"), "c1:eth0 → 172.17.0.2 · 12.4 µs");
}

TEST(HtmlEscape, replaces_invalid_utf8_and_control_characters) {
    const std::string fffd = "\xEF\xBF\xBD";
    EXPECT_EQ(report::html_escape("a\tb\nc"), "a\tb\nc");
    EXPECT_EQ(report::html_escape(std::string("x\0y", 3)), "x" + fffd + "y");
    EXPECT_EQ(report::html_escape("\x1b[31m"), fffd + "[31m");
    EXPECT_EQ(report::html_escape("\xFF"), fffd);
    EXPECT_EQ(report::html_escape("\xC0\xBC"), fffd + fffd);              // overlong '<'
    EXPECT_EQ(report::html_escape("\xED\xA0\x80"), fffd + fffd + fffd);   // a surrogate
    EXPECT_EQ(report::html_escape("\xE2\x82"), fffd + fffd);             // cut short
    EXPECT_EQ(report::html_escape("\xF0\x9F\x93\xA6"), "\xF0\x9F\x93\xA6");  // U+1F4E6
}

TEST(HtmlReportLab, draws_the_path_a_ladder_per_flow_and_a_histogram_per_hop) {
    const std::vector<std::string> names{"c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink"};
    auto db = lab_db(names);
    const Json model = test::report_json(db);
    const std::string html = test::html_page(db);

    EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0U);
    EXPECT_EQ(count(html, "<svg class=\"pathdiagram\""), 1U);
    EXPECT_EQ(count(html, "<svg class=\"ladder\""), model["flows"].size());
    EXPECT_EQ(count(html, "<svg class=\"boxplot\""), model["flows"].size());
    EXPECT_EQ(count(html, "<svg class=\"hist\""), model["hop_totals"].size());
    for (const auto& name : names) EXPECT_NE(html.find(">" + name + "<"), std::string::npos) << name;
    // Every journey of the lab is drawn (10 per flow), forward and reply, and the rewrites are marked.
    EXPECT_EQ(count(html, "<g class=\"j fwd\">"), 20U);
    EXPECT_EQ(count(html, "<g class=\"j rep\">"), 20U);
    EXPECT_EQ(count(html, "All 10 journeys drawn"), 4U);
    EXPECT_GT(count(html, "<line class=\"halo\""), 0U);
    for (const Json& f : model["flows"]) {
        SCOPED_TRACE(f["id"].dump());
        EXPECT_NE(html.find("id=\"flow-" + f["id"].dump() + "\""), std::string::npos);
        EXPECT_NE(html.find("<mark>" + f["translated"]["src"].get<std::string>() + "</mark>"), std::string::npos);
        for (const Json& h : f["hops"]) {
            // p50 and p99 of every hop, as the text report prints them.
            EXPECT_NE(html.find("p50 " + report::format_duration(h["p50_ns"].get<std::int64_t>())),
                      std::string::npos);
            EXPECT_NE(html.find("p99 " + report::format_duration(h["p99_ns"].get<std::int64_t>())),
                      std::string::npos);
        }
    }
    // The masquerade: where it happened (between docker0 and uplink) and what it did.
    EXPECT_NE(html.find("src (2) → 192.168.43.116"), std::string::npos);
    EXPECT_NE(html.find("src 172.17.0.2 → 192.168.43.116"), std::string::npos);
}

TEST(HtmlReportLab, is_self_contained) {
    auto db = lab_db({"c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink"});
    const std::string html = test::html_page(db);
    EXPECT_EQ(html.find("://"), std::string::npos);
    EXPECT_EQ(count(html, "http"), count(html, "http-equiv"));  // the Content-Security-Policy's <meta http-equiv>
    EXPECT_EQ(html.find("url("), std::string::npos);
    EXPECT_EQ(html.find("@import"), std::string::npos);
    EXPECT_EQ(count(html, "<script"), 1U);
    for (const std::string& tag : tags(without_script(html))) {
        SCOPED_TRACE(tag);
        EXPECT_EQ(tag.find(" src="), std::string::npos);
        EXPECT_TRUE(tag.find(" href=") == std::string::npos || tag.find(" href=\"#") != std::string::npos);
    }
    // Nothing may load from anywhere, and only our own script may run.
    EXPECT_NE(html.find("content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"),
              std::string::npos);
}

TEST(HtmlReportLab, hostile_point_names_end_up_only_as_text) {
    const std::vector<std::string> names{
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "c1' onmouseover='alert(1)",
        "</title></svg><svg onload=alert(1)>",
        "docker0&amp;<b>bold</b>",
        "up\xFFlink\x1b[0m",
    };
    auto db = lab_db(names);
    const Json model = test::report_json(db);
    const std::string html = test::html_page(db);

    for (const auto& name : names) {
        SCOPED_TRACE(name);
        EXPECT_EQ(html.find(name), std::string::npos);                              // never raw
        EXPECT_NE(html.find(report::html_escape(name)), std::string::npos);  // always escaped, in full somewhere
    }
    EXPECT_EQ(count(html, "<script"), 1U);
    EXPECT_EQ(html.find("<img"), std::string::npos);
    EXPECT_EQ(html.find("<b>bold"), std::string::npos);
    for (const std::string& tag : tags(without_script(html))) {
        SCOPED_TRACE(tag);
        EXPECT_EQ(tag.find("alert"), std::string::npos);
        EXPECT_EQ(tag.find("onerror"), std::string::npos);
        EXPECT_EQ(tag.find("onload"), std::string::npos);
        EXPECT_EQ(tag.find("onmouseover"), std::string::npos);
    }
    // Still a whole report: the flows are drawn with the hostile names as lanes.
    EXPECT_EQ(count(html, "<svg class=\"ladder\""), model["flows"].size());
}

TEST(HtmlReportLab, options_bound_flows_journeys_and_rows) {
    auto db = lab_db({"c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink"});
    report::HtmlOptions options;
    options.max_flows_drawn = 1;
    options.max_journeys_per_ladder = 3;
    options.max_table_rows = 2;
    options.max_histograms = 2;
    const std::string html = test::html_page(db, options);
    EXPECT_EQ(count(html, "<svg class=\"ladder\""), 1U);
    EXPECT_EQ(count(html, "<g class=\"j fwd\">") + count(html, "<g class=\"j rep\">"), 3U);
    EXPECT_NE(html.find("Drawn: 3 of 10 journeys"), std::string::npos);
    EXPECT_NE(html.find("2 more flows (the quietest) are not listed"), std::string::npos);
    EXPECT_NE(html.find("Drawn in full below: 1 of 4 flows"), std::string::npos);
    EXPECT_EQ(count(html, "<svg class=\"hist\""), 2U);
    // Evenly spread: the first journey and later ones, not the first three.
    const std::regex label(R"(class="tlabel [a-z]+"[^>]*>\+([^<]+)<)");
    std::vector<std::string> times;
    for (std::sregex_iterator it(html.begin(), html.end(), label), end; it != end; ++it) times.push_back((*it)[1]);
    ASSERT_EQ(times.size(), 3U);
    EXPECT_EQ(times[0], "0 ns");
    EXPECT_NE(times[2].find("ms"), std::string::npos) << times[2];
}

TEST(HtmlReportLab, histograms_sample_only_the_flows_of_the_model) {
    auto db = lab_db({"c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink"});
    // --flow: c1's ping only. Its 5 forward journeys cross c1-eth0 → c1-veth, and so do the 5 of c1's UDP flow, which
    // the histogram must not count: its bars count 5 hop times, and so do the recomputed totals.
    const std::string html = test::html_page(db, {}, report::FlowFilter::parse("proto icmp host 172.17.0.2").value());
    EXPECT_NE(html.find("Hop latency, the flows shown"), std::string::npos);
    const auto at = html.find("<h4>forward · c1-eth0 → c1-veth</h4>");
    ASSERT_NE(at, std::string::npos);
    const auto note = html.find("<p class=\"note\">", at);
    EXPECT_NE(html.substr(note, 120).find("n 5 "), std::string::npos) << html.substr(note, 120);
    const std::regex bar(R"(<rect class="bar [a-z]+"[^>]*><title>([0-9]+)</title>)");
    const std::string svg = html.substr(at, note - at);
    std::int64_t bars = 0;
    for (std::sregex_iterator it(svg.begin(), svg.end(), bar), end; it != end; ++it) bars += std::stoll((*it)[1]);
    EXPECT_EQ(bars, 5);
}

// A capture far larger than the page: 3000 flows, one of them with 60000 journeys. The page stays small.
TEST(HtmlReportSize, is_bounded_by_the_options_not_by_the_capture) {
    auto db = store::Database::open_memory();
    db.exec(R"sql(
        INSERT INTO points (id, name, role, packets, path_order) VALUES (1, 'inside', 'container', 0, 0),
                                                                        (2, 'outside', 'uplink', 0, 1);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
        INSERT INTO flows (id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, trans_sport,
                           trans_dport, packets, journeys, first_ts_ns, last_ts_ns)
        SELECT i, 17, '10.0.0.' || (i % 250), '192.0.2.1', 1000 + i, 53, '198.51.100.1', '192.0.2.1', 1000 + i, 53,
               CASE i WHEN 1 THEN 120000 ELSE 2 END, CASE i WHEN 1 THEN 60000 ELSE 1 END, 1000000000, 1000000000 + i
        FROM n;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 62999)
        INSERT INTO journeys (id, flow_id, direction, fingerprint, sightings, first_point, last_point, first_ts_ns,
                              last_ts_ns)
        SELECT i, CASE WHEN i <= 60000 THEN 1 ELSE i - 59999 END, 'forward',
               i, 2, 1, 2, 1000000000 + i * 1000000, 1000000000 + i * 1000000 + 5000 FROM n;
        INSERT INTO packets (point_id, ts_ns, cap_len, wire_len, direction, flags, ethertype, vlan, ip_version, proto,
                             src, dst, sport, dport, ip_id, ttl, ip_len, payload_len, fingerprint, journey_id, hop, raw)
        SELECT h + 1, first_ts_ns + h * 5000, 60, 60, '', 0, 2048, 0, 4, 17,
               CASE h WHEN 0 THEN '10.0.0.1' ELSE '198.51.100.1' END, '192.0.2.1', 1000 + flow_id, 53, id % 65536, 64,
               60, 32, id, id, h, x''
        FROM journeys, (SELECT 0 AS h UNION ALL SELECT 1);
        INSERT INTO nat_rewrites (flow_id, direction, field, from_value, to_value, from_point, to_point, packets)
        SELECT id, 'forward', 'src', orig_src, trans_src, 1, 2, journeys FROM flows;
        INSERT INTO hops (flow_id, direction, from_point, to_point, count, min_ns, p50_ns, p90_ns, p99_ns, max_ns)
        VALUES (NULL, 'forward', 1, 2, 62999, 5000, 5000, 5000, 5000, 5000);
    )sql");
    db.build_indexes();
    ASSERT_EQ(test::report_json(db)["flows"].size(), 3000U);
    const report::HtmlOptions options;
    const std::string html = test::html_page(db, options);
    RecordProperty("html_bytes", std::to_string(html.size()));
    EXPECT_LT(html.size(), 2U * 1024 * 1024) << "the page should stay well under its documented bound";
    EXPECT_EQ(count(html, "<svg class=\"ladder\""), options.max_flows_drawn);
    EXPECT_NE(html.find("Drawn: 60 of 60000 journeys"), std::string::npos);
    EXPECT_NE(html.find("2500 more flows (the quietest) are not listed"), std::string::npos);
    EXPECT_EQ(count(html, "<svg class=\"hist\""), 1U);
    EXPECT_NE(html.find("histogram of 15749 sampled"), std::string::npos) << "every 4th of 62999 journeys";
}

}  // namespace
}  // namespace hoptrace
