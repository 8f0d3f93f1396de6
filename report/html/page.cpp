#include "report/html/page.hpp"

#include "report/report.hpp"
#include "report/report_detail.hpp"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <vector>

namespace hoptrace::report {
namespace {

using Json = nlohmann::ordered_json;

// ------------------------------------------------------------------------------------------------------------
// Text: every string from the capture or the command line goes through esc() (clip, then escape).

// Cuts `s` to at most `n` code points, marking the cut with "…". Works on bytes, so invalid UTF-8 stays
// invalid here and html_escape replaces it.
std::string clip(std::string_view s, std::size_t n) {
    std::size_t points = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
        if (points == n - 1 && n > 0) {
            // Is there more than one code point left? Then cut here.
            std::size_t rest = 0;
            for (std::size_t k = i; k < s.size(); ++k) rest += (static_cast<unsigned char>(s[k]) & 0xC0) != 0x80;
            if (rest > 1) {
                std::string out(s.substr(0, i));
                out.append("…");
                return out;
            }
            break;
        }
        ++points;
    }
    return std::string(s);
}

std::string esc(std::string_view s, std::size_t n) { return html_escape(clip(s, n)); }

std::string fmt(const char* format, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

// SVG coordinates: one decimal is plenty.
std::string px(double v) {
    std::string s = fmt("%.1f", v);
    if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
    return s;
}

std::string num(std::int64_t v) { return std::to_string(v); }

std::string str_of(const Json& j, const char* key) {
    if (!j.is_object()) return {};
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::int64_t int_of(const Json& j, const char* key) {
    if (!j.is_object()) return 0;
    const auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<std::int64_t>() : 0;
}

const Json& empty_object() {
    static const Json empty = Json::object();
    return empty;
}

const Json& array_of(const Json& j, const char* key) {
    static const Json empty = Json::array();
    if (!j.is_object()) return empty;
    const auto it = j.find(key);
    return it != j.end() && it->is_array() ? *it : empty;
}

std::string value_text(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string plural(std::int64_t n, const char* one, const char* many) { return num(n) + " " + (n == 1 ? one : many); }

std::string utc_time(std::int64_t ns) {
    const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
    std::tm tm{};
    if (gmtime_r(&secs, &tm) == nullptr) return {};
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    std::string out = buf;
    char frac[16];
    std::snprintf(frac, sizeof frac, ".%03d UTC", static_cast<int>((ns / 1'000'000) % 1000));
    out.append(frac);
    return out;
}

// What an ICMP error means, in words (the text report's names).
std::string icmp_name(const std::string& icmp, std::int64_t type, std::int64_t code) {
    return report_detail::icmp_error_name(icmp == "icmpv6" ? 58 : 1, type, code);
}

bool has_ports(const std::string& proto) { return proto == "tcp" || proto == "udp" || proto == "sctp"; }

// A tuple as HTML, each part that differs from `other` (when given) marked.
std::string tuple_html(const std::string& proto, const Json& t, const Json* other, std::size_t n) {
    auto part = [&](const char* key, const std::string& text) {
        const bool changed = other != nullptr && other->is_object() && t.contains(key) && other->contains(key) &&
                             (*other)[key] != t[key];
        std::string s = esc(text, n);
        return changed ? "<mark>" + s + "</mark>" : s;
    };
    auto addr = [&](const char* key) {
        std::string a = str_of(t, key);
        if (has_ports(proto) && a.find(':') != std::string::npos) a = "[" + a + "]";
        return part(key, a);
    };
    std::string out;
    if (t.contains("id")) {
        out.append(addr("src")).append(" → ").append(addr("dst")).append(" id ").append(part("id", num(int_of(t, "id"))));
    } else if (has_ports(proto)) {
        out.append(addr("src")).append(":").append(part("sport", num(int_of(t, "sport"))));
        out.append(" → ").append(addr("dst")).append(":").append(part("dport", num(int_of(t, "dport"))));
    } else {
        out.append(addr("src")).append(" → ").append(addr("dst"));
    }
    return out;
}

// One line for the rewrites of one field on one edge: "src 172.17.0.2 → 192.168.43.116", or with several flows
// "src (2) → 192.168.43.116" (masquerade), "dst 192.168.43.116 → (2)", "id: 3 rewrites".
std::string rewrite_summary(const std::string& field, const std::set<std::pair<std::string, std::string>>& pairs) {
    if (pairs.size() == 1) return field + " " + pairs.begin()->first + " → " + pairs.begin()->second;
    std::set<std::string> from;
    std::set<std::string> to;
    for (const auto& [a, b] : pairs) {
        from.insert(a);
        to.insert(b);
    }
    const std::string n = std::to_string(pairs.size());
    if (to.size() == 1) return field + " (" + std::to_string(from.size()) + ") → " + *to.begin();
    if (from.size() == 1) return field + " " + *from.begin() + " → (" + std::to_string(to.size()) + ")";
    return field + ": " + n + " rewrites";
}

// The time axis of box plots and histograms: log-like, but 0 ns is a real (and common) hop time.
double time_axis(double ns) { return std::log10(1.0 + std::max(0.0, ns) / 100.0); }

struct Tick {
    double ns;
    const char* label;
};
constexpr Tick k_ticks[] = {{0, "0"},         {1e3, "1 µs"},   {1e4, "10 µs"}, {1e5, "100 µs"}, {1e6, "1 ms"},
                            {1e7, "10 ms"},   {1e8, "100 ms"}, {1e9, "1 s"},   {1e10, "10 s"}};

// ------------------------------------------------------------------------------------------------------------
// The page's fixed parts.

constexpr const char* k_css = R"css(
:root{--fwd:#2563eb;--rep:#0d9488;--nat:#f59e0b;--natink:#92400e;--loss:#dc2626;--err:#9333ea;--ink:#1e293b;
--muted:#64748b;--line:#e2e8f0;--bg:#f1f5f9}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;
color:var(--ink)}
header{background:#0f172a;color:#f8fafc;padding:18px 0 16px}
.wrap{max-width:1240px;margin:0 auto;padding:0 24px}
header h1{font-size:22px;margin:0;font-weight:650;letter-spacing:-.01em}
header h1 small{font-weight:400;color:#94a3b8;font-size:14px;margin-left:10px}
header .meta{color:#cbd5e1;font-size:12.5px;margin-top:4px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.card{background:#1e293b;border-radius:8px;padding:7px 14px;min-width:104px}
.card b{display:block;font-size:20px;font-variant-numeric:tabular-nums}
.card span{font-size:12px;color:#94a3b8}
.card.bad b{color:#fca5a5}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 8px;font-weight:650}
h3{font-size:15px;margin:0 0 6px;font-weight:650}
h4{font-size:13px;margin:0 0 2px;font-weight:600}
p.note{color:var(--muted);font-size:12.5px;margin:6px 0}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:11.5px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.bad{color:var(--loss);font-weight:600}
mark{background:#fde68a;border-radius:3px;padding:0 2px;color:inherit}
a{color:var(--fwd);text-decoration:none}
a:hover{text-decoration:underline}
.badge{display:inline-block;border-radius:9px;padding:0 8px;font-size:12px;font-weight:600;white-space:nowrap}
.b-ok{background:#dcfce7;color:#166534}.b-bad{background:#fee2e2;color:#991b1b}.b-none{background:#f1f5f9;color:#475569}
.b-nat{background:#fef3c7;color:var(--natink)}.b-err{background:#f3e8ff;color:#6b21a8}
.legend{display:flex;flex-wrap:wrap;gap:6px 22px;font-size:13px;align-items:center}
.legend span{display:inline-flex;align-items:center;gap:7px}
.legend svg{display:inline-block}
svg{display:block;max-width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;fill:var(--ink)}
.node rect.box{fill:#fff;stroke:#94a3b8;stroke-width:1.2}
.node.container rect.box{stroke:var(--fwd)}.node.bridge rect.box{stroke:#7c3aed}.node.uplink rect.box{stroke:#0f766e}
.node.remote rect.box{stroke-dasharray:5 4;fill:#f8fafc}
.node.offpath rect.box{fill:#f8fafc;stroke-dasharray:2 3}
.node text.role{font-size:10.5px;font-weight:700;letter-spacing:.08em;fill:var(--muted)}
.node text.name{font-size:14px;font-weight:650}
.node text.sub{font-size:11.5px;fill:#475569}
.node text.addr{font-size:12px;font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;fill:#0f172a}
.node text.drops{fill:var(--loss);font-weight:600}
.edge{fill:none;stroke:#94a3b8;stroke-width:2}
.edge.remote{stroke-dasharray:6 5}
.arrow{fill:#94a3b8}
.tag rect{stroke-width:1}
.tag.nat rect{fill:#fef3c7;stroke:var(--nat)}.tag.nat text{fill:var(--natink);font-size:11.5px}
.tag.loss rect{fill:#fee2e2;stroke:var(--loss)}.tag.loss text{fill:#991b1b;font-size:11.5px;font-weight:600}
.tag.err rect{fill:#f3e8ff;stroke:var(--err)}.tag.err text{fill:#6b21a8;font-size:11.5px;font-weight:600}
.tag text.h{font-weight:700}
.ladder-box{max-height:600px;overflow-y:auto;border:1px solid var(--line);border-radius:6px;margin-top:2px}
.lane{stroke:#cbd5e1;stroke-width:1.5}
.lanehead text.name{font-size:13px;font-weight:650}
.lanehead text.role{font-size:10.5px;fill:var(--muted);letter-spacing:.06em}
.j path{fill:none;stroke-width:2;stroke-linejoin:round}
.j circle{stroke:#fff;stroke-width:1}
.j.fwd path{stroke:var(--fwd)}.j.fwd circle{fill:var(--fwd)}
.j.rep path{stroke:var(--rep)}.j.rep circle{fill:var(--rep)}
.j.err path{stroke:var(--err);stroke-dasharray:6 4}.j.err circle{fill:var(--err)}
.j:hover path{stroke-width:3.6}
.j:hover circle{r:4.5}
.halo{stroke:var(--nat);stroke-width:9;stroke-opacity:.45;stroke-linecap:round;fill:none}
.rw{font-size:11px;fill:var(--natink);font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:4px}
.tlabel{font-size:11px;font-variant-numeric:tabular-nums}
.tlabel.fwd{fill:var(--fwd)}.tlabel.rep{fill:var(--rep)}.tlabel.err{fill:var(--err)}
.gap rect{fill:#f1f5f9}
.gap text{font-size:10.5px;fill:var(--muted)}
.lost path{stroke:var(--loss);stroke-width:2;stroke-dasharray:3 3;fill:none}
.lost .x{stroke:var(--loss);stroke-width:2.6;stroke-linecap:round}
.lost text{font-size:10.5px;fill:var(--loss);font-weight:700}
.warn{font-size:13px;fill:var(--err);font-weight:700}
.axis line{stroke:#cbd5e1}.axis text{font-size:10.5px;fill:var(--muted)}
.bar{fill-opacity:.85}.bar.fwd{fill:var(--fwd)}.bar.rep{fill:var(--rep)}
.whisker{stroke-width:1.6}.whisker.fwd{stroke:var(--fwd)}.whisker.rep{stroke:var(--rep)}
.box.fwd{fill:#bfdbfe;stroke:var(--fwd)}.box.rep{fill:#99f6e4;stroke:var(--rep)}
.p50{stroke:#0f172a;stroke-width:2.4}
.p99{fill:var(--loss)}
.pline{stroke-width:1.5;stroke-dasharray:4 3}.pline.p50l{stroke:#0f172a}.pline.p99l{stroke:var(--loss)}
.plabel{font-size:10.5px;font-weight:600}.plabel.p99t{fill:var(--loss)}
.rowlabel{font-size:12px}.rowlabel.fwd{fill:var(--fwd)}.rowlabel.rep{fill:var(--rep)}
.stat{font-size:11.5px;fill:#334155;font-variant-numeric:tabular-nums}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px 22px}
.flowhead{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:baseline;margin-bottom:4px}
.flowhead .t{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:13px}
.js-error{background:#fee2e2;color:#991b1b;padding:8px;margin:8px}
footer{color:var(--muted);font-size:12px;padding:6px 0 30px}
)css";

// The page's only script: it marks the page as rendered once the DOM is complete and shows any script error
// or blocked load (there should be none) in the page, so a headless browser's --dump-dom reveals both. Its
// SHA-256 is in the Content-Security-Policy (k_script_hash): change one, change the other (the e2e test
// tests/e2e/html_report.py recomputes it; a stale hash leaves the page unmarked).
constexpr const char* k_script =
    "(function(){"
    "function flag(m){var d=document.createElement('pre');d.className='js-error';"
    "d.setAttribute('data-hoptrace-error','1');d.textContent='hoptrace page error: '+m;"
    "(document.body||document.documentElement).appendChild(d);}"
    "window.addEventListener('error',function(e){flag(e.message||('failed to load '+(e.target&&e.target.tagName)));},true);"
    "document.addEventListener('securitypolicyviolation',function(e){flag('blocked '+e.violatedDirective);});"
    "document.addEventListener('DOMContentLoaded',function(){"
    "document.documentElement.setAttribute('data-rendered','ok');"
    "var s=document.getElementById('render-status');if(s){s.textContent='rendered-ok';}});"
    "})();";
constexpr const char* k_script_hash = "sha256-POUqImPInGUr+o6ZC7ZVok4eZRNJKr4lqRR/JY4toAw=";

// ------------------------------------------------------------------------------------------------------------
// What the model and the store say about points, flows and journeys.

struct PointInfo {
    std::string name;
    std::string role;
    std::string netns;
    std::string ifname;
    std::string source;
    std::string note;
    std::int64_t packets = 0;
    std::int64_t drops = 0;
    std::int64_t id = -1;  // points.id, -1 when the store does not know the name
};

struct Sighting {
    std::int64_t point = 0;
    std::int64_t ts = 0;
    std::string src, dst;
    std::int64_t sport = 0, dport = 0, ttl = 0, flags = 0, proto = 0, payload_len = 0;
    std::optional<std::int64_t> icmp_type, icmp_code, icmp_seq, tcp_flags;
};

struct Journey {
    std::int64_t id = 0;
    bool reply = false;
    bool lost_candidate = false;
    const Json* error = nullptr;  // the report's icmp_errors entry when it is one
    std::vector<Sighting> sightings;
};

constexpr std::int64_t k_flag_icmp_error = 16;

class Page {
public:
    Page(const Json& report, const store::Database& db, const HtmlOptions& options)
        : m_report(report), m_db(db), m_opt(options) {}

    std::string render();

private:
    const Json& m_report;
    const store::Database& m_db;
    const HtmlOptions& m_opt;
    std::string m_out;

    std::vector<PointInfo> m_points;          // report order = path order
    std::map<std::string, std::size_t> m_point_index;  // name -> m_points index
    std::map<std::int64_t, std::size_t> m_point_by_id;
    std::vector<const Json*> m_flows;         // the model's flows, in its order
    std::set<std::int64_t> m_drawn;           // flow ids drawn in full
    std::vector<const Json*> m_listed;        // flows in the summary table
    std::map<std::int64_t, std::vector<const Json*>> m_errors_of_flow;  // flow id -> icmp_errors entries
    std::map<std::int64_t, const Json*> m_error_of_journey;

    std::size_t text_limit() const { return std::max<std::size_t>(m_opt.max_text_chars, 8); }
    std::string e(std::string_view s) const { return esc(s, text_limit()); }
    std::string point_name(std::int64_t id) const {
        const auto it = m_point_by_id.find(id);
        return it == m_point_by_id.end() ? "point#" + num(id) : m_points[it->second].name;
    }

    void load();
    void header();
    void legend();
    void path_diagram();
    void flow_table();
    void nat_table();
    void flow_detail(const Json& flow);
    void ladder(const Json& flow);
    void box_plots(const Json& flow);
    void histograms();
    void icmp_error_table();
    void traceroute_tables();
    void point_table();
    std::vector<Journey> sample_journeys(const Json& flow, std::size_t& total);
};

// ------------------------------------------------------------------------------------------------------------

void Page::load() {
    for (const Json& p : array_of(m_report, "points")) {
        PointInfo info;
        info.name = str_of(p, "name");
        info.role = str_of(p, "role");
        info.netns = str_of(p, "netns");
        info.ifname = str_of(p, "ifname");
        info.source = str_of(p, "source");
        info.note = str_of(p, "note");
        info.packets = int_of(p, "packets");
        info.drops = int_of(p, "kernel_drops");
        m_point_index.emplace(info.name, m_points.size());
        m_points.push_back(std::move(info));
    }
    auto q = m_db.prepare("SELECT id, name FROM points");
    while (q.step()) {
        const auto it = m_point_index.find(q.column_text(1));
        if (it == m_point_index.end()) continue;
        m_points[it->second].id = q.column_int(0);
        m_point_by_id[q.column_int(0)] = it->second;
    }

    for (const Json& f : array_of(m_report, "flows")) m_flows.push_back(&f);

    // ICMP errors belong to the flow of the packet they quote: the store knows which (one row per error, and the
    // errors looked at are bounded like the table that lists them).
    const Json& errors = array_of(m_report, "icmp_errors");
    auto jq = m_db.prepare("SELECT flow_id FROM journeys WHERE id = ?1");
    std::size_t looked = 0;
    for (const Json& err : errors) {
        if (looked++ >= m_opt.max_table_rows) break;
        const std::int64_t journey = int_of(err, "journey");
        m_error_of_journey[journey] = &err;
        jq.reset();
        jq.bind(1, journey);
        if (jq.step()) m_errors_of_flow[jq.column_int(0)].push_back(&err);
    }

    // Which flows to draw in full and to list: the troubled ones (losses, ICMP errors) first, then the busiest;
    // shown in the model's order.
    std::vector<const Json*> ranked = m_flows;
    auto lost_count = [](const Json& f) {
        std::int64_t n = 0;
        for (const Json& l : array_of(f, "lost")) n += int_of(l, "count");
        return n;
    };
    std::stable_sort(ranked.begin(), ranked.end(), [&](const Json* a, const Json* b) {
        const bool ta = lost_count(*a) > 0 || m_errors_of_flow.contains(int_of(*a, "id"));
        const bool tb = lost_count(*b) > 0 || m_errors_of_flow.contains(int_of(*b, "id"));
        if (ta != tb) return ta;
        return int_of(*a, "packets") > int_of(*b, "packets");
    });
    std::set<const Json*> listed;
    for (std::size_t i = 0; i < ranked.size(); ++i) {
        if (i < m_opt.max_flows_drawn) m_drawn.insert(int_of(*ranked[i], "id"));
        if (i < m_opt.max_table_rows) listed.insert(ranked[i]);
    }
    for (const Json* f : m_flows)
        if (listed.contains(f)) m_listed.push_back(f);
}

std::string Page::render() {
    load();
    m_out.reserve(64 * 1024);
    m_out.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    m_out.append("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
                 "script-src '");
    m_out.append(k_script_hash);
    m_out.append("'; base-uri 'none'; form-action 'none'\">\n");
    m_out.append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    m_out.append("<title>hoptrace report: ")
        .append(plural(static_cast<std::int64_t>(m_flows.size()), "flow", "flows"))
        .append("</title>\n<style>")
        .append(k_css)
        .append("</style>\n<script>")
        .append(k_script)
        .append("</script>\n</head>\n<body>\n");
    header();
    m_out.append("<main class=\"wrap\">\n");
    legend();
    path_diagram();
    flow_table();
    nat_table();
    for (const Json* f : m_flows)
        if (m_drawn.contains(int_of(*f, "id"))) flow_detail(*f);
    histograms();
    icmp_error_table();
    traceroute_tables();
    point_table();
    m_out.append("</main>\n<footer class=\"wrap\">");
    const auto version = m_db.meta("hoptrace_version");
    m_out.append("Made by hoptrace");
    if (version) m_out.append(" ").append(e(*version));
    m_out.append(" from ").append(e(m_db.path().empty() ? std::string("an in-memory database") : m_db.path()));
    m_out.append(". Self-contained: nothing is loaded from anywhere. <span id=\"render-status\"></span></footer>\n");
    m_out.append("</body>\n</html>\n");
    return std::move(m_out);
}

void Page::header() {
    std::int64_t packets = 0;
    std::int64_t drops = 0;
    for (const PointInfo& p : m_points) {
        packets += p.packets;
        drops += p.drops;
    }
    std::int64_t journeys = 0;
    std::int64_t lost = 0;
    std::int64_t rewritten = 0;
    std::int64_t first = 0;
    std::int64_t last = 0;
    for (const Json* f : m_flows) {
        journeys += int_of(*f, "journeys");
        for (const Json& l : array_of(*f, "lost")) lost += int_of(l, "count");
        if (!array_of(*f, "rewrites").empty()) ++rewritten;
        const std::int64_t a = int_of(*f, "first_ts_ns");
        const std::int64_t b = int_of(*f, "last_ts_ns");
        if (a != 0 && (first == 0 || a < first)) first = a;
        last = std::max(last, b);
    }
    const auto errors = static_cast<std::int64_t>(array_of(m_report, "icmp_errors").size());

    m_out.append("<header><div class=\"wrap\">\n<h1>hoptrace report<small>");
    if (first != 0) {
        m_out.append(utc_time(first));
        m_out.append(" · ").append(html_escape(format_duration(last - first)));
    }
    m_out.append("</small></h1>\n");
    std::string command = m_db.meta("command_line").value_or("");
    if (command.empty()) command = m_db.meta("last_import").value_or("");
    const std::string host = m_db.meta("host").value_or("");
    if (!command.empty() || !host.empty()) {
        m_out.append("<div class=\"meta\">");
        if (!host.empty()) m_out.append("host <b>").append(e(host)).append("</b> · ");
        if (!command.empty()) m_out.append("<code>").append(e(command)).append("</code>");
        m_out.append("</div>\n");
    }
    if (const std::string filter = str_of(m_report, "flow_filter"); !filter.empty())
        m_out.append("<div class=\"meta\">only the flows that match <code>").append(e(filter)).append("</code></div>\n");
    auto card = [&](std::int64_t n, const char* one, const char* many, bool bad) {
        m_out.append("<div class=\"card").append(bad ? " bad" : "").append("\"><b>").append(num(n));
        m_out.append("</b><span>").append(n == 1 ? one : many).append("</span></div>");
    };
    m_out.append("<div class=\"cards\">");
    card(static_cast<std::int64_t>(m_points.size()), "point", "points", false);
    card(packets, "sighting", "sightings", false);
    card(static_cast<std::int64_t>(m_flows.size()), "flow", "flows", false);
    card(journeys, "journey", "journeys", false);
    card(rewritten, "flow rewritten (NAT)", "flows rewritten (NAT)", false);
    card(lost, "packet lost", "packets lost", lost > 0);
    card(errors, "ICMP error", "ICMP errors", errors > 0);
    card(drops, "kernel drop", "kernel drops", drops > 0);
    m_out.append("</div>\n</div></header>\n");
}

void Page::legend() {
    m_out.append("<section class=\"legend\" aria-label=\"legend\">");
    auto item = [&](const std::string& svg, const char* text) {
        m_out.append("<span><svg width=\"46\" height=\"18\" viewBox=\"0 0 46 18\" aria-hidden=\"true\">")
            .append(svg)
            .append("</svg>")
            .append(text)
            .append("</span>");
    };
    item("<g class=\"j fwd lg\"><path d=\"M3 5 L43 13\"/><circle cx=\"3\" cy=\"5\" r=\"3\"/><circle cx=\"43\" cy=\"13\" r=\"3\"/></g>",
         "forward packet (from the flow's initiator)");
    item("<g class=\"j rep lg\"><path d=\"M43 5 L3 13\"/><circle cx=\"43\" cy=\"5\" r=\"3\"/><circle cx=\"3\" cy=\"13\" r=\"3\"/></g>",
         "reply packet");
    item("<line class=\"halo\" x1=\"6\" y1=\"9\" x2=\"40\" y2=\"9\"/><g class=\"j fwd lg\"><path d=\"M6 9 L40 9\"/></g>",
         "a field rewritten (NAT) on this hop");
    item("<g class=\"lost\"><path d=\"M4 9 L30 9\"/><line class=\"x\" x1=\"33\" y1=\"4\" x2=\"42\" y2=\"14\"/>"
         "<line class=\"x\" x1=\"42\" y1=\"4\" x2=\"33\" y2=\"14\"/></g>",
         "lost: not seen at the next point");
    item("<g class=\"j err lg\"><path d=\"M3 9 L43 9\"/></g>", "ICMP error");
    item("<g class=\"gap\"><rect x=\"2\" y=\"3\" width=\"42\" height=\"12\" rx=\"2\"/></g>",
         "time gap compressed (ladders)");
    m_out.append("</section>\n");
}

// ------------------------------------------------------------------------------------------------------------
// The path diagram: every point on some flow's path, in columns (the longest chain of hops before it), edges
// between consecutive points of the flows' paths; NAT, losses and ICMP errors tagged where they happen.

void Page::path_diagram() {
    const std::size_t n = m_points.size();
    std::vector<bool> on_path(n, false);
    struct Edge {
        std::map<std::string, std::set<std::pair<std::string, std::string>>> nat[2];  // [forward, reply] field -> from, to
        std::int64_t lost[2] = {0, 0};
        std::int64_t flows = 0;
    };
    std::map<std::pair<std::size_t, std::size_t>, Edge> edges;  // (lower index, higher index)
    std::vector<std::set<std::string>> addresses(n);
    std::vector<const char*> address_role(n, "src");
    std::vector<std::pair<std::size_t, const Json*>> ends_outside;  // flows that leave by their path's last point
    std::set<std::size_t> sinks_with_remote;
    std::set<std::string> remote_addresses;

    auto index_of = [&](const Json& name) -> std::optional<std::size_t> {
        if (!name.is_string()) return std::nullopt;
        const auto it = m_point_index.find(name.get<std::string>());
        if (it == m_point_index.end() || it->second >= m_opt.max_diagram_points) return std::nullopt;
        return it->second;
    };

    // A flow between two containers on one bridge (its forward packets observed by the bridge that switched them
    // between two ports) is drawn as both containers' own paths to that bridge: the columns still run from the
    // containers outward, and each container shows its own address.
    auto draw_as_bridge_legs = [&](const Json& f, const std::vector<std::size_t>& idx) {
        for (const Json& o : array_of(f, "observers")) {
            const Json& between = array_of(o, "between");
            if (str_of(o, "direction") != "forward" || between.size() != 2) continue;
            const auto bridge = index_of(o["point"]);
            const auto egress_point = index_of(between[1]);
            const auto egress = std::find(idx.begin(), idx.end(), egress_point.value_or(n));
            if (!bridge || egress == idx.begin() || egress == idx.end()) continue;
            on_path[*bridge] = true;
            std::vector<std::size_t> outward(idx.begin(), egress);
            std::vector<std::size_t> inward(idx.rbegin(), std::make_reverse_iterator(egress));
            for (const auto& [leg, side] : {std::pair{&outward, "src"}, std::pair{&inward, "dst"}}) {
                leg->push_back(*bridge);
                const std::string address = str_of(f["original"], side);
                for (std::size_t k = 0; k < leg->size(); ++k) {
                    if (!address.empty() && addresses[(*leg)[k]].size() < 6) addresses[(*leg)[k]].insert(address);
                    if (k + 1 == leg->size()) break;
                    const auto key = std::minmax((*leg)[k], (*leg)[k + 1]);
                    ++edges[{key.first, key.second}].flows;
                }
            }
            return true;
        }
        return false;
    };

    for (const Json* f : m_flows) {
        const Json& path = array_of(*f, "path");
        std::vector<std::size_t> idx;
        for (const Json& name : path)
            if (auto i = index_of(name)) idx.push_back(*i);
        if (idx.empty()) continue;
        for (std::size_t i : idx) on_path[i] = true;
        if (draw_as_bridge_legs(*f, idx)) continue;
        // Addresses along the path: the inner end of the tuple (the source when the flow starts inside), with the
        // forward rewrites applied where they happened.
        const bool starts_inside = idx.front() <= idx.back();
        const char* side = starts_inside ? "src" : "dst";
        std::string address = str_of((*f)["original"], side);
        for (std::size_t k = 0; k < idx.size(); ++k) {
            if (!address.empty() && addresses[idx[k]].size() < 6) addresses[idx[k]].insert(address);
            address_role[idx[k]] = side;
            if (k + 1 == idx.size()) break;
            for (const Json& r : array_of(*f, "rewrites")) {
                const Json& between = array_of(r, "between");
                if (str_of(r, "direction") != "forward" || between.size() != 2) continue;
                if (index_of(between[0]) != idx[k] || index_of(between[1]) != idx[k + 1]) continue;
                if (str_of(r, "field") == side) address = value_text(r["to"]);
            }
        }
        for (std::size_t k = 0; k + 1 < idx.size(); ++k) {
            const auto key = std::minmax(idx[k], idx[k + 1]);
            ++edges[{key.first, key.second}].flows;
        }
        if (starts_inside && m_points[idx.back()].role != "container") ends_outside.emplace_back(idx.back(), f);
        for (const Json& r : array_of(*f, "rewrites")) {
            const Json& between = array_of(r, "between");
            if (between.size() != 2) continue;
            const auto a = index_of(between[0]);
            const auto b = index_of(between[1]);
            if (!a || !b) continue;
            const auto key = std::minmax(*a, *b);
            const int d = str_of(r, "direction") == "reply" ? 1 : 0;
            auto& pairs = edges[{key.first, key.second}].nat[d][str_of(r, "field")];
            if (pairs.size() < 64) pairs.emplace(value_text(r["from"]), value_text(r["to"]));
        }
        for (const Json& l : array_of(*f, "lost")) {
            const auto a = index_of(l["after"]);
            const auto b = index_of(l["expected"]);
            if (!a || !b) continue;
            const auto key = std::minmax(*a, *b);
            edges[{key.first, key.second}].lost[str_of(l, "direction") == "reply" ? 1 : 0] += int_of(l, "count");
        }
    }
    const bool masquerading = m_db.meta("masquerade").value_or("") == "yes";
    // ICMP errors, tagged at the point that saw each first (where it came in).
    std::map<std::size_t, std::int64_t> errors_at;
    for (const Json& err : array_of(m_report, "icmp_errors")) {
        const Json& path = array_of(err, "path");
        if (path.empty()) continue;
        if (auto i = index_of(path[0])) ++errors_at[*i];
    }

    // Columns: longest chain of edges before each point (edges go from lower to higher path order).
    std::vector<std::size_t> column(n, 0);
    for (const auto& [key, edge] : edges) column[key.second] = std::max(column[key.second], column[key.first] + 1);
    // edges are visited in key order (by lower index), which is a topological order; one more pass settles chains
    // whose lower ends were raised after they were visited.
    for (int pass = 0; pass < 2; ++pass)
        for (const auto& [key, edge] : edges) column[key.second] = std::max(column[key.second], column[key.first] + 1);

    std::size_t columns = 0;
    for (std::size_t i = 0; i < n; ++i)
        if (on_path[i]) columns = std::max(columns, column[i] + 1);
    // "Beyond": where flows go after the outermost column (their destinations after NAT).
    for (const auto& [last, f] : ends_outside) {
        if (column[last] + 1 != columns) continue;
        sinks_with_remote.insert(last);
        const std::string dst = str_of((*f)["translated"], "dst");
        if (!dst.empty() && remote_addresses.size() < 5) remote_addresses.insert(dst);
    }
    const bool remote = !sinks_with_remote.empty();

    constexpr double node_w = 178;
    constexpr double node_h = 104;
    constexpr double row_gap = 26;
    constexpr double top = 18;
    // Wide gaps where an edge carries tags.
    std::vector<double> gap_after(columns + 1, 64);
    for (const auto& [key, edge] : edges)
        if (!edge.nat[0].empty() || !edge.nat[1].empty() || edge.lost[0] || edge.lost[1])
            gap_after[column[key.first]] = 196;
    if (remote && columns > 0) gap_after[columns - 1] = std::max(gap_after[columns - 1], 80.0);
    std::vector<double> col_x(columns + 1, 16);
    for (std::size_t c = 1; c <= columns; ++c) col_x[c] = col_x[c - 1] + node_w + gap_after[c - 1];

    // Rows: in each column, points ordered by the mean row of their predecessors (fewer crossings), then path order.
    std::vector<std::vector<std::size_t>> by_col(columns);
    std::vector<double> row(n, 0);
    for (std::size_t c = 0; c < columns; ++c) {
        std::vector<std::pair<double, std::size_t>> members;
        for (std::size_t i = 0; i < n; ++i) {
            if (!on_path[i] || column[i] != c) continue;
            double sum = 0;
            int count = 0;
            for (const auto& [key, edge] : edges)
                if (key.second == i && column[key.first] < c) {
                    sum += row[key.first];
                    ++count;
                }
            members.emplace_back(count ? sum / count : static_cast<double>(i), i);
        }
        std::stable_sort(members.begin(), members.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        for (std::size_t k = 0; k < members.size(); ++k) {
            by_col[c].push_back(members[k].second);
            row[members[k].second] = static_cast<double>(k);
        }
    }
    std::size_t max_rows = 1;
    for (const auto& col : by_col) max_rows = std::max(max_rows, col.size());
    const double height_rows = static_cast<double>(max_rows) * (node_h + row_gap);
    // Centre each column vertically.
    std::vector<double> node_y(n, 0);
    for (std::size_t c = 0; c < columns; ++c) {
        const double h = static_cast<double>(by_col[c].size()) * (node_h + row_gap);
        for (std::size_t k = 0; k < by_col[c].size(); ++k)
            node_y[by_col[c][k]] = top + (height_rows - h) / 2 + static_cast<double>(k) * (node_h + row_gap);
    }

    std::vector<std::size_t> off_path;
    for (std::size_t i = 0; i < n && i < m_opt.max_diagram_points; ++i)
        if (!on_path[i]) off_path.push_back(i);
    const std::size_t off_per_row = 6;
    const double off_rows = off_path.empty() ? 0 : std::ceil(static_cast<double>(off_path.size()) / off_per_row);
    const double off_top = top + height_rows + (off_path.empty() ? 0 : 30);
    double width = col_x[columns] + (remote ? 150 : 0) + 16;
    width = std::max(width, 16 + static_cast<double>(std::min(off_path.size(), off_per_row)) * (node_w + 20));
    width = std::max(width, 400.0);
    const double height = off_top + off_rows * (node_h - 22 + 16) + 24;

    m_out.append("<section id=\"path\"><h2>The path</h2>\n");
    if (columns == 0) {
        m_out.append("<p class=\"note\">No journey crossed two points: there is no path to draw.</p>\n");
    }
    m_out.append("<svg class=\"pathdiagram\" role=\"img\" aria-label=\"path diagram\" viewBox=\"0 0 ")
        .append(px(width)).append(" ").append(px(height)).append("\" width=\"").append(px(width))
        .append("\" height=\"").append(px(height)).append("\">\n");

    auto mid_y = [&](std::size_t i) { return node_y[i] + node_h / 2; };
    auto arrow = [&](double x, double y, const char* cls) {
        m_out.append("<path class=\"").append(cls).append("\" d=\"M").append(px(x)).append(" ").append(px(y))
            .append(" l-9 -5 v10 z\"/>");
    };
    // Edges first, tags later (on top).
    for (const auto& [key, edge] : edges) {
        const double x1 = col_x[column[key.first]] + node_w;
        const double y1 = mid_y(key.first);
        const double x2 = col_x[column[key.second]];
        const double y2 = mid_y(key.second);
        const double mx = (x1 + x2) / 2;
        m_out.append("<path class=\"edge\" style=\"stroke-width:")
            .append(px(1.4 + std::min(3.0, std::log2(static_cast<double>(std::max<std::int64_t>(edge.flows, 1))))))
            .append("\" d=\"M").append(px(x1)).append(" ").append(px(y1)).append(" C")
            .append(px(mx)).append(" ").append(px(y1)).append(" ").append(px(mx)).append(" ").append(px(y2))
            .append(" ").append(px(x2 - 8)).append(" ").append(px(y2)).append("\"><title>")
            .append(e(m_points[key.first].name)).append(" → ").append(e(m_points[key.second].name)).append(": ")
            .append(plural(edge.flows, "flow", "flows")).append("</title></path>");
        arrow(x2, y2, "arrow");
        m_out.append("\n");
    }
    double remote_x = col_x[columns] + 10;
    const double remote_h = 40 + 16.0 * static_cast<double>(remote_addresses.size());
    const double remote_y = top + (height_rows - remote_h) / 2;
    if (remote) {
        for (std::size_t i : sinks_with_remote) {
            const double x1 = col_x[column[i]] + node_w;
            const double y1 = mid_y(i);
            const double y2 = remote_y + remote_h / 2;
            const double mx = (x1 + remote_x) / 2;
            m_out.append("<path class=\"edge remote\" d=\"M").append(px(x1)).append(" ").append(px(y1)).append(" C")
                .append(px(mx)).append(" ").append(px(y1)).append(" ").append(px(mx)).append(" ").append(px(y2))
                .append(" ").append(px(remote_x - 8)).append(" ").append(px(y2)).append("\"/>");
            arrow(remote_x, y2, "arrow");
        }
        m_out.append("\n");
    }

    auto node = [&](std::size_t i, double x, double y, bool off) {
        const PointInfo& p = m_points[i];
        const std::string role = p.role == "container" || p.role == "veth" || p.role == "bridge" || p.role == "uplink"
                                     ? p.role
                                     : std::string("point");
        const double h = off ? node_h - 22 : node_h;
        m_out.append("<g class=\"node ").append(role).append(off ? " offpath" : "").append("\"><title>")
            .append(e(p.name)).append(" (").append(e(p.role)).append(")");
        if (!p.netns.empty() || !p.ifname.empty())
            m_out.append("\nnetns ").append(e(p.netns.empty() ? "-" : p.netns)).append(", interface ")
                .append(e(p.ifname.empty() ? "-" : p.ifname));
        if (!p.source.empty() && p.source != "live") m_out.append("\nfrom ").append(e(p.source));
        if (!p.note.empty()) m_out.append("\n").append(e(p.note));
        m_out.append("</title><rect class=\"box\" x=\"").append(px(x)).append("\" y=\"").append(px(y))
            .append("\" width=\"").append(px(node_w)).append("\" height=\"").append(px(h)).append("\" rx=\"8\"/>");
        const std::string tx = px(x + 12);
        m_out.append("<text class=\"role\" x=\"").append(tx).append("\" y=\"").append(px(y + 17)).append("\">")
            .append(off ? "NOT ON A PATH" : (role == "point" ? "POINT" : role == "container" ? "CONTAINER"
                                             : role == "veth"    ? "HOST VETH"
                                             : role == "bridge"  ? "BRIDGE"
                                                                 : "UPLINK"))
            .append("</text>");
        m_out.append("<text class=\"name\" x=\"").append(tx).append("\" y=\"").append(px(y + 36)).append("\">")
            .append(esc(p.name, 20)).append("</text>");
        std::string sub;
        if (!p.netns.empty() || !p.ifname.empty()) {
            sub = p.netns.empty() ? p.ifname : p.netns + (p.ifname.empty() ? "" : " · " + p.ifname);
        } else if (!p.source.empty()) {
            const auto slash = p.source.find_last_of('/');
            sub = slash == std::string::npos ? p.source : p.source.substr(slash + 1);
        }
        m_out.append("<text class=\"sub\" x=\"").append(tx).append("\" y=\"").append(px(y + 53)).append("\">")
            .append(esc(sub, 26)).append("</text>");
        double line_y = y + 71;
        if (!off) {
            // As many addresses as fit the box (about 20 characters), then "+N".
            std::string addr;
            std::size_t k = 0;
            for (const std::string& a : addresses[i]) {
                const std::size_t more = addresses[i].size() - k;
                if (k > 0 && addr.size() + 2 + a.size() + (more > 1 ? 3 : 0) > 20) {
                    addr.append(" +").append(num(static_cast<std::int64_t>(more)));
                    break;
                }
                addr.append(addr.empty() ? "" : ", ").append(a);
                ++k;
            }
            m_out.append("<text class=\"addr\" x=\"").append(tx).append("\" y=\"").append(px(line_y)).append("\">");
            if (!addr.empty()) {
                m_out.append("<tspan class=\"sub\">").append(address_role[i]).append(" </tspan>").append(esc(addr, 24));
            }
            m_out.append("</text>");
            line_y += 18;
        }
        m_out.append("<text class=\"sub\" x=\"").append(tx).append("\" y=\"").append(px(line_y)).append("\">")
            .append(plural(p.packets, "packet", "packets"));
        if (p.drops > 0)
            m_out.append(", <tspan class=\"drops\">").append(num(p.drops)).append(" dropped by the kernel</tspan>");
        m_out.append("</text></g>\n");
    };
    for (std::size_t i = 0; i < n; ++i)
        if (on_path[i]) node(i, col_x[column[i]], node_y[i], false);
    if (remote) {
        m_out.append("<g class=\"node remote\"><rect class=\"box\" x=\"").append(px(remote_x)).append("\" y=\"")
            .append(px(remote_y)).append("\" width=\"140\" height=\"").append(px(remote_h))
            .append("\" rx=\"8\"/><text class=\"role\" x=\"").append(px(remote_x + 12)).append("\" y=\"")
            .append(px(remote_y + 18)).append("\">BEYOND</text>");
        double y = remote_y + 36;
        for (const std::string& a : remote_addresses) {
            m_out.append("<text class=\"addr\" x=\"").append(px(remote_x + 12)).append("\" y=\"").append(px(y))
                .append("\">").append(esc(a, 17)).append("</text>");
            y += 16;
        }
        m_out.append("</g>\n");
    }
    for (std::size_t k = 0; k < off_path.size(); ++k) {
        const double x = 16 + static_cast<double>(k % off_per_row) * (node_w + 20);
        const double y = off_top + std::floor(static_cast<double>(k) / off_per_row) * (node_h - 22 + 16);
        node(off_path[k], x, y, true);
    }

    // Tags on edges: NAT (amber), losses (red); ICMP errors under the point that first saw them.
    auto tag = [&](double cx, double y, const char* cls, const std::vector<std::string>& lines,
                   const std::string& title) {
        std::size_t longest = 0;
        for (const auto& l : lines) {
            std::size_t w = 0;
            for (unsigned char c : l) w += (c & 0xC0) != 0x80;
            longest = std::max(longest, w);
        }
        const double w = std::min(188.0, 16 + 6.6 * static_cast<double>(longest));
        const double h = 8 + 15.0 * static_cast<double>(lines.size());
        m_out.append("<g class=\"tag ").append(cls).append("\"><title>").append(title).append("</title><rect x=\"")
            .append(px(cx - w / 2)).append("\" y=\"").append(px(y)).append("\" width=\"").append(px(w))
            .append("\" height=\"").append(px(h)).append("\" rx=\"6\"/>");
        for (std::size_t k = 0; k < lines.size(); ++k) {
            m_out.append("<text").append(k == 0 ? " class=\"h\"" : "").append(" x=\"").append(px(cx))
                .append("\" y=\"").append(px(y + 16 + 15.0 * static_cast<double>(k)))
                .append("\" text-anchor=\"middle\">").append(lines[k]).append("</text>");
        }
        m_out.append("</g>\n");
        return h;
    };
    for (const auto& [key, edge] : edges) {
        const double x1 = col_x[column[key.first]] + node_w;
        const double x2 = col_x[column[key.second]];
        const double cx = (x1 + x2) / 2;
        double y = (mid_y(key.first) + mid_y(key.second)) / 2 + 8;
        const std::string between = e(m_points[key.first].name) + " and " + e(m_points[key.second].name);
        for (int d = 0; d < 2; ++d) {
            if (edge.nat[d].empty()) continue;
            const bool masquerade = d == 0 && masquerading && edge.nat[0].contains("src") &&
                                    m_points[key.second].role == "uplink";
            std::vector<std::string> lines{masquerade ? "MASQUERADE (forward)" : d == 0 ? "NAT (forward)" : "NAT (reply)"};
            for (const char* field : {"src", "dst", "sport", "dport", "id"}) {
                const auto it = edge.nat[d].find(field);
                if (it == edge.nat[d].end()) continue;
                if (lines.size() == 4) {
                    lines.back() = "…";
                    break;
                }
                lines.push_back(esc(rewrite_summary(field, it->second), 28));
            }
            if (d == 0) {
                // The forward tag sits above the edge, the reply tag below it.
                const double h = 8 + 15.0 * static_cast<double>(lines.size());
                tag(cx, (mid_y(key.first) + mid_y(key.second)) / 2 - h - 8, "nat", lines,
                    "rewritten between " + between);
            } else {
                y += tag(cx, y, "nat", lines, "rewritten between " + between) + 6;
            }
        }
        for (int d = 0; d < 2; ++d) {
            if (edge.lost[d] == 0) continue;
            y += tag(cx, y, "loss",
                     {"✕ " + num(edge.lost[d]) + (d == 0 ? " forward" : " reply") + " lost"},
                     plural(edge.lost[d], "packet", "packets") + " seen at one of " + between +
                         " and never at the other") +
                 6;
        }
    }
    for (const auto& [i, count] : errors_at) {
        if (!on_path[i]) continue;
        const double cx = col_x[column[i]] + node_w / 2;
        tag(cx, node_y[i] + node_h + 4, "err", {"⚠ " + plural(count, "ICMP error", "ICMP errors")},
            "ICMP errors first seen at " + e(m_points[i].name));
    }
    m_out.append("</svg>\n");
    if (!off_path.empty())
        m_out.append("<p class=\"note\">Points below the line saw no packet that another point saw too.</p>\n");
    if (n > m_opt.max_diagram_points)
        m_out.append("<p class=\"note\">The diagram shows the first ")
            .append(num(static_cast<std::int64_t>(m_opt.max_diagram_points)))
            .append(" points in path order; the table at the end lists them all.</p>\n");
    m_out.append("<p class=\"note\">Columns follow the flows' paths from where they start; the addresses are the "
                 "flows' own at each point (after NAT where it happened).</p>\n</section>\n");
}

// ------------------------------------------------------------------------------------------------------------

void Page::flow_table() {
    m_out.append("<section id=\"flows\"><h2>Flows</h2>\n<table><thead><tr><th>flow</th><th>proto</th>"
                 "<th>original</th><th>translated</th><th class=\"n\">journeys (fwd / reply)</th>"
                 "<th class=\"n\">sightings</th><th class=\"n\">lost</th><th class=\"n\">ICMP errors</th>"
                 "<th>conntrack</th><th class=\"n\">duration</th></tr></thead><tbody>\n");
    for (const Json* fp : m_listed) {
        const Json& f = *fp;
        const std::int64_t id = int_of(f, "id");
        const std::string proto = str_of(f, "proto");
        std::int64_t lost = 0;
        for (const Json& l : array_of(f, "lost")) lost += int_of(l, "count");
        const auto err_it = m_errors_of_flow.find(id);
        const auto errors = err_it == m_errors_of_flow.end() ? 0 : static_cast<std::int64_t>(err_it->second.size());
        m_out.append("<tr><td>");
        if (m_drawn.contains(id)) m_out.append("<a href=\"#flow-").append(num(id)).append("\">").append(num(id)).append("</a>");
        else m_out.append(num(id));
        m_out.append("</td><td>").append(e(proto)).append("</td><td class=\"mono\">")
            .append(tuple_html(proto, f["original"], nullptr, text_limit())).append("</td><td class=\"mono\">");
        if (f["translated"] == f["original"]) m_out.append("<span class=\"badge b-none\">unchanged</span>");
        else m_out.append(tuple_html(proto, f["translated"], &f["original"], text_limit()));
        m_out.append("</td><td class=\"n\">").append(num(int_of(f, "forward_journeys"))).append(" / ")
            .append(num(int_of(f, "reply_journeys")));
        if (const std::int64_t ambiguous = int_of(f, "ambiguous"); ambiguous > 0)
            m_out.append(" <span class=\"badge b-bad\" title=\"journeys that could have been another flow's: not "
                         "decided by the evidence\">").append(num(ambiguous)).append(" ambiguous</span>");
        m_out.append("</td><td class=\"n\">").append(num(int_of(f, "packets")))
            .append("</td><td class=\"n").append(lost ? " bad" : "").append("\">").append(num(lost))
            .append("</td><td class=\"n").append(errors ? " bad" : "").append("\">").append(num(errors))
            .append("</td><td>");
        const std::string state = f.contains("conntrack") ? str_of(f["conntrack"], "state") : std::string();
        if (state == "agrees") m_out.append("<span class=\"badge b-ok\">agrees</span>");
        else if (state == "differs") m_out.append("<span class=\"badge b-bad\">differs</span>");
        else if (!state.empty()) m_out.append("<span class=\"badge b-none\">").append(e(state)).append("</span>");
        else m_out.append("<span class=\"badge b-none\">no conntrack</span>");
        m_out.append("</td><td class=\"n\">")
            .append(html_escape(format_duration(int_of(f, "last_ts_ns") - int_of(f, "first_ts_ns"))))
            .append("</td></tr>\n");
    }
    m_out.append("</tbody></table>\n");
    std::int64_t ambiguous = 0;
    for (const Json* fp : m_flows) ambiguous += int_of(*fp, "ambiguous");
    if (ambiguous > 0)
        m_out.append("<p class=\"note bad\">").append(num(ambiguous))
            .append(" journeys are ambiguous: one of their sightings could have continued another flow's journey just "
                    "as well, and nothing (conntrack, a learned translation, the TTL, the path, the time) decided it. "
                    "Their paths and rewrites are the likeliest, not proven.</p>\n");
    for (const Json* fp : m_listed) {
        if (!fp->contains("pmtu")) continue;
        const Json& p = (*fp)["pmtu"];
        m_out.append("<p class=\"note\">Flow ").append(num(int_of(*fp, "id"))).append(": ")
            .append(num(int_of(p, "lost_min_size"))).append("-byte DF packets did not get through after ")
            .append(e(str_of(p, "after"))).append(", packets up to ").append(num(int_of(p, "passed_max_size")))
            .append(" bytes pass; frag-needed: ").append(e(str_of(p, "frag_needed")))
            .append(p["mtu"].is_number() ? " (MTU " + num(p["mtu"].get<std::int64_t>()) + ")" : std::string())
            .append(".</p>\n");
    }
    if (m_listed.size() < m_flows.size())
        m_out.append("<p class=\"note\">")
            .append(num(static_cast<std::int64_t>(m_flows.size() - m_listed.size())))
            .append(" more flows (the quietest) are not listed; <code>hoptrace report --format json</code> "
                    "lists all.</p>\n");
    if (m_drawn.size() < m_flows.size())
        m_out.append("<p class=\"note\">Drawn in full below: ").append(num(static_cast<std::int64_t>(m_drawn.size())))
            .append(" of ").append(num(static_cast<std::int64_t>(m_flows.size())))
            .append(" flows (those with losses or ICMP errors first, then the busiest).</p>\n");
    m_out.append("</section>\n");
}

void Page::nat_table() {
    m_out.append("<section id=\"nat\"><h2>NAT</h2>\n");
    std::size_t rows = 0;
    std::size_t unchanged = 0;
    bool any_conntrack = false;
    std::string body;
    for (const Json* fp : m_listed) {
        const Json& f = *fp;
        const bool rewritten = f["translated"] != f["original"] || !array_of(f, "rewrites").empty();
        if (!rewritten) {
            ++unchanged;
            continue;
        }
        ++rows;
        const std::string proto = str_of(f, "proto");
        const std::int64_t id = int_of(f, "id");
        body.append("<tr><td>");
        if (m_drawn.contains(id)) body.append("<a href=\"#flow-").append(num(id)).append("\">").append(num(id)).append("</a>");
        else body.append(num(id));
        body.append("</td><td>").append(e(proto)).append("</td><td class=\"mono\">")
            .append(tuple_html(proto, f["original"], nullptr, text_limit()))
            .append("</td><td>⇄</td><td class=\"mono\">")
            .append(tuple_html(proto, f["translated"], &f["original"], text_limit())).append("</td><td>");
        // One line per (direction, pair of points): the fields rewritten there.
        std::map<std::tuple<std::string, std::string, std::string>, std::vector<std::string>> where;
        for (const Json& r : array_of(f, "rewrites")) {
            const Json& between = array_of(r, "between");
            if (between.size() != 2) continue;
            auto& fields = where[{str_of(r, "direction"), value_text(between[0]), value_text(between[1])}];
            const std::string field = str_of(r, "field");
            if (std::find(fields.begin(), fields.end(), field) == fields.end()) fields.push_back(field);
        }
        for (const auto& [key, fields] : where) {
            const auto& [direction, from, to] = key;
            body.append(e(from)).append(" → ").append(e(to)).append(" <span class=\"badge b-nat\">").append(e(direction));
            for (std::size_t k = 0; k < fields.size(); ++k) body.append(k ? ", " : " ").append(e(fields[k]));
            body.append("</span><br>");
        }
        body.append("</td><td class=\"mono\">");
        if (f.contains("conntrack")) {
            any_conntrack = true;
            const Json& c = f["conntrack"];
            const std::string state = str_of(c, "state");
            if (state == "agrees") body.append("<span class=\"badge b-ok\">agrees</span> ");
            else if (state == "differs") body.append("<span class=\"badge b-bad\">differs</span> ");
            else body.append("<span class=\"badge b-none\">").append(e(state)).append("</span>");
            if (c.contains("translated"))
                body.append(tuple_html(proto, c["translated"], &f["translated"], text_limit()));
        } else {
            body.append("<span class=\"badge b-none\">not captured live</span>");
        }
        body.append("</td></tr>\n");
    }
    if (rows == 0) {
        m_out.append("<p>No flow was rewritten between the points.</p>\n");
    } else {
        m_out.append("<table><thead><tr><th>flow</th><th>proto</th><th>original (as sent)</th><th></th>"
                     "<th>translated (as it left)</th><th>rewritten between</th><th>conntrack's translation</th>"
                     "</tr></thead><tbody>\n")
            .append(body)
            .append("</tbody></table>\n<p class=\"note\">Marked: the fields NAT changed. ");
        if (any_conntrack)
            m_out.append("The last column is the kernel's conntrack entry for the flow (its reply tuple, reversed), "
                         "marked where it differs from what the packets showed.");
        else
            m_out.append("Imported captures have no conntrack table to compare with.");
        m_out.append("</p>\n");
    }
    if (unchanged > 0 && rows > 0)
        m_out.append("<p class=\"note\">").append(plural(static_cast<std::int64_t>(unchanged), "flow was", "flows were"))
            .append(" not rewritten.</p>\n");
    m_out.append("</section>\n");
}

// ------------------------------------------------------------------------------------------------------------
// Per flow: the ladder (a sequence diagram of a sample of its journeys) and box plots of its hops.

std::vector<Journey> Page::sample_journeys(const Json& flow, std::size_t& total) {
    const std::int64_t flow_id = int_of(flow, "id");
    total = static_cast<std::size_t>(std::max<std::int64_t>(int_of(flow, "journeys"), 0));
    std::set<std::int64_t> ids;
    std::set<std::int64_t> lost_ids;
    const auto m = static_cast<std::int64_t>(std::max<std::size_t>(m_opt.max_journeys_per_ladder, 1));
    if (total > 0) {
        // Evenly spread over the flow's journeys in time order: row rn is taken when (rn-1)·M/total reaches a new
        // integer, which picks min(M, total) rows.
        auto q = m_db.prepare(
            "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY first_ts_ns, id) AS rn FROM journeys "
            "WHERE flow_id = ?1) WHERE rn = 1 OR ((rn - 1) * ?2) / ?3 != ((rn - 2) * ?2) / ?3 LIMIT ?2");
        q.bind(1, flow_id).bind(2, m).bind(3, static_cast<std::int64_t>(total));
        while (q.step()) ids.insert(q.column_int(0));
    }
    // Notable journeys, so the ladder shows them even when the sample missed them: lost ones, ICMP errors.
    std::size_t notable = 0;
    auto lq = m_db.prepare(
        "SELECT id FROM journeys WHERE flow_id = ?1 AND direction = ?2 AND last_point = ?3 "
        // a super-packet whose segments went on (GSO/TSO) was not lost where it ended
        "AND id NOT IN (SELECT related_id FROM journeys WHERE flow_id = ?1 AND relation = 'segment-of') "
        "ORDER BY first_ts_ns, id LIMIT ?4");
    for (const Json& l : array_of(flow, "lost")) {
        const auto it = m_point_index.find(str_of(l, "after"));
        if (it == m_point_index.end() || m_points[it->second].id < 0) continue;
        lq.reset();
        lq.bind(1, flow_id).bind(2, str_of(l, "direction")).bind(3, m_points[it->second].id).bind(4, std::int64_t{3});
        while (lq.step() && notable < m_opt.max_notable_journeys) {
            if (!m_error_of_journey.contains(lq.column_int(0))) lost_ids.insert(lq.column_int(0));
            if (ids.insert(lq.column_int(0)).second) ++notable;
        }
    }
    if (const auto it = m_errors_of_flow.find(flow_id); it != m_errors_of_flow.end()) {
        std::size_t k = 0;
        for (const Json* err : it->second) {
            if (notable >= m_opt.max_notable_journeys || k++ >= 4) break;
            if (ids.insert(int_of(*err, "journey")).second) ++notable;
        }
    }

    std::vector<Journey> out;
    auto jq = m_db.prepare("SELECT direction FROM journeys WHERE id = ?1");
    auto sq = m_db.prepare(
        "SELECT point_id, ts_ns, src, dst, sport, dport, ttl, flags, proto, icmp_type, icmp_code, icmp_seq, "
        "tcp_flags, payload_len FROM packets WHERE journey_id = ?1 AND hop IS NOT NULL ORDER BY hop LIMIT ?2");
    for (const std::int64_t id : ids) {
        jq.reset();
        jq.bind(1, id);
        if (!jq.step()) continue;
        Journey j;
        j.id = id;
        j.reply = jq.column_text(0) == "reply";
        j.lost_candidate = lost_ids.contains(id);
        if (const auto it = m_error_of_journey.find(id); it != m_error_of_journey.end()) j.error = it->second;
        sq.reset();
        sq.bind(1, id).bind(2, static_cast<std::int64_t>(m_points.size() + 1));
        while (sq.step()) {
            Sighting s;
            s.point = sq.column_int(0);
            s.ts = sq.column_int(1);
            s.src = sq.column_text(2);
            s.dst = sq.column_text(3);
            s.sport = sq.column_int(4);
            s.dport = sq.column_int(5);
            s.ttl = sq.column_int(6);
            s.flags = sq.column_int(7);
            s.proto = sq.column_int(8);
            if (!sq.column_is_null(9)) s.icmp_type = sq.column_int(9);
            if (!sq.column_is_null(10)) s.icmp_code = sq.column_int(10);
            if (!sq.column_is_null(11)) s.icmp_seq = sq.column_int(11);
            if (!sq.column_is_null(12)) s.tcp_flags = sq.column_int(12);
            s.payload_len = sq.column_int(13);
            j.sightings.push_back(std::move(s));
        }
        if (!j.sightings.empty()) {
            if ((j.sightings.front().flags & k_flag_icmp_error) != 0 && j.error == nullptr) j.error = &empty_object();
            out.push_back(std::move(j));
        }
    }
    std::sort(out.begin(), out.end(), [](const Journey& a, const Journey& b) {
        return a.sightings.front().ts != b.sightings.front().ts ? a.sightings.front().ts < b.sightings.front().ts
                                                                : a.id < b.id;
    });
    return out;
}

std::string tcp_flags_text(std::int64_t f) {
    static constexpr std::pair<int, const char*> names[] = {{2, "SYN"}, {16, "ACK"}, {1, "FIN"},
                                                            {4, "RST"}, {8, "PSH"},  {32, "URG"}};
    std::string out;
    for (const auto& [bit, name] : names)
        if ((f & bit) != 0) out.append(out.empty() ? "" : ",").append(name);
    return out.empty() ? "none" : out;
}

void Page::flow_detail(const Json& f) {
    const std::int64_t id = int_of(f, "id");
    const std::string proto = str_of(f, "proto");
    m_out.append("<section class=\"flow\" id=\"flow-").append(num(id)).append("\">\n<div class=\"flowhead\"><h3>Flow ")
        .append(num(id)).append(" · ").append(e(proto)).append("</h3><span class=\"t\">")
        .append(tuple_html(proto, f["original"], nullptr, text_limit())).append("</span>");
    if (f["translated"] != f["original"])
        m_out.append("<span>⇒</span><span class=\"t\">")
            .append(tuple_html(proto, f["translated"], &f["original"], text_limit())).append("</span>");
    m_out.append("</div>\n<p class=\"note\">")
        .append(plural(int_of(f, "forward_journeys"), "forward", "forward"))
        .append(" and ").append(plural(int_of(f, "reply_journeys"), "reply", "replies")).append(" · ")
        .append(plural(int_of(f, "packets"), "sighting", "sightings"));
    const Json& path = array_of(f, "path");
    if (!path.empty()) {
        m_out.append(" · path ");
        for (std::size_t i = 0; i < path.size(); ++i)
            m_out.append(i ? " → " : "").append(e(value_text(path[i])));
    }
    std::set<std::string> observed_by;  // a bridge that switched the flow between two ports: not on the path
    for (const Json& o : array_of(f, "observers"))
        if (observed_by.insert(str_of(o, "point")).second)
            m_out.append(" · observed by ").append(e(str_of(o, "point"))).append(" (bridge-local, not a hop)");
    if (f.contains("conntrack")) {
        const std::string state = str_of(f["conntrack"], "state");
        m_out.append(" · conntrack ").append(state == "agrees"   ? "<span class=\"badge b-ok\">agrees</span>"
                                             : state == "differs" ? "<span class=\"badge b-bad\">differs</span>"
                                                                  : "<span class=\"badge b-none\">" + e(state) + "</span>");
    }
    for (const Json& l : array_of(f, "lost")) {
        const std::string cause = l.contains("cause") ? str_of(l, "cause") : "dropped";
        m_out.append(" · <span class=\"badge ").append(cause == "dropped" ? "b-bad\">✕ " : "b-err\">⚠ ")
            .append(num(int_of(l, "count"))).append(" ").append(e(str_of(l, "direction")));
        if (cause == "expired") m_out.append(" expired (TTL) after ");
        else if (cause == "rejected") m_out.append(" answered by an ICMP error after ");
        else m_out.append(" lost after ");
        m_out.append(e(str_of(l, "after"))).append(", never at ").append(e(str_of(l, "expected"))).append("</span>");
    }
    for (const Json& g : array_of(f, "segmentation")) {  // GSO/TSO super-packets cut into segments
        const Json& between = array_of(g, "between");
        if (between.size() != 2) continue;
        m_out.append(" · <span class=\"badge b-none\">").append(e(str_of(g, "direction"))).append(" ")
            .append(plural(int_of(g, "super_packets"), "super-packet", "super-packets")).append(" cut into ")
            .append(plural(int_of(g, "segments"), "segment", "segments")).append(" between ")
            .append(e(value_text(between[0]))).append(" and ").append(e(value_text(between[1])))
            .append(" (GSO/TSO)</span>");
    }
    if (const auto it = m_errors_of_flow.find(id); it != m_errors_of_flow.end())
        m_out.append(" · <span class=\"badge b-err\">⚠ ")
            .append(plural(static_cast<std::int64_t>(it->second.size()), "ICMP error", "ICMP errors"))
            .append("</span>");
    m_out.append("</p>\n");
    ladder(f);
    box_plots(f);
    m_out.append("</section>\n");
}

void Page::ladder(const Json& f) {
    std::size_t total = 0;
    const std::vector<Journey> journeys = sample_journeys(f, total);
    if (journeys.empty()) {
        m_out.append("<p class=\"note\">No journey to draw.</p>\n");
        return;
    }
    // Lanes: the flow's path, then other points its drawn journeys crossed, in path order; at most max_lanes.
    std::vector<std::size_t> lanes;
    std::set<std::size_t> in_lanes;
    for (const Json& name : array_of(f, "path")) {
        if (!name.is_string()) continue;
        const auto it = m_point_index.find(name.get<std::string>());
        if (it != m_point_index.end() && in_lanes.insert(it->second).second) lanes.push_back(it->second);
    }
    std::set<std::size_t> extra;
    for (const Journey& j : journeys)
        for (const Sighting& s : j.sightings)
            if (const auto it = m_point_by_id.find(s.point); it != m_point_by_id.end() && !in_lanes.contains(it->second))
                extra.insert(it->second);
    for (std::size_t i : extra) lanes.push_back(i);
    const std::size_t max_lanes = std::max<std::size_t>(m_opt.max_lanes, 1);
    if (lanes.size() > max_lanes) lanes.resize(max_lanes);
    std::map<std::int64_t, std::size_t> lane_of;  // points.id -> lane
    for (std::size_t k = 0; k < lanes.size(); ++k) lane_of[m_points[lanes[k]].id] = k;

    constexpr double width = 1100;
    constexpr double gutter = 118;
    constexpr double right = 70;
    const double span = width - gutter - right;
    auto lane_x = [&](std::size_t k) {
        return lanes.size() == 1 ? gutter + span / 2
                                 : gutter + span * static_cast<double>(k) / static_cast<double>(lanes.size() - 1);
    };
    const std::size_t name_chars = lanes.size() <= 1
                                       ? 40
                                       : std::max<std::size_t>(6, static_cast<std::size_t>(span / static_cast<double>(lanes.size() - 1) / 7.5));

    // Vertical axis: time, every gap between two consecutive events drawn on a log-like scale and gaps beyond
    // 1 ms capped (and marked): a journey takes microseconds, the next one may come seconds later.
    std::vector<std::int64_t> events;
    for (const Journey& j : journeys)
        for (const Sighting& s : j.sightings) events.push_back(s.ts);
    std::sort(events.begin(), events.end());
    events.erase(std::unique(events.begin(), events.end()), events.end());
    constexpr double top = 16;
    constexpr std::int64_t k_break_ns = 1'000'000;
    std::map<std::int64_t, double> y_of;
    struct Gap {
        double y0, y1;
        std::int64_t ns;
    };
    std::vector<Gap> gaps;
    double y = top;
    for (std::size_t i = 0; i < events.size(); ++i) {
        if (i > 0) {
            const auto d = static_cast<double>(events[i] - events[i - 1]);
            const double step = std::min(34.0, std::max(4.0, 3.2 * std::log2(1.0 + d / 250.0)));
            if (events[i] - events[i - 1] >= k_break_ns) gaps.push_back({y, y + step, events[i] - events[i - 1]});
            y += step;
        }
        y_of[events[i]] = y;
    }
    const double height = y + 34;
    const std::int64_t t0 = int_of(f, "first_ts_ns") != 0 ? int_of(f, "first_ts_ns") : events.front();

    // Lane heads: a separate SVG above the scrolling ladder, so they stay in view.
    m_out.append("<svg class=\"lanehead\" viewBox=\"0 0 ").append(px(width)).append(" 46\" width=\"").append(px(width))
        .append("\" height=\"46\">");
    m_out.append("<text class=\"role\" x=\"8\" y=\"40\">TIME ↓</text>");
    for (std::size_t k = 0; k < lanes.size(); ++k) {
        const PointInfo& p = m_points[lanes[k]];
        const bool edge_left = k == 0 && lanes.size() > 1;
        const bool edge_right = k + 1 == lanes.size() && lanes.size() > 1;
        const char* anchor = edge_left ? "start" : edge_right ? "end" : "middle";
        const double x = lane_x(k) + (edge_left ? -10 : edge_right ? 10 : 0);
        m_out.append("<g><title>").append(e(p.name)).append(" (").append(e(p.role)).append(")</title><text class=\"name\" x=\"")
            .append(px(x)).append("\" y=\"18\" text-anchor=\"").append(anchor).append("\">").append(esc(p.name, name_chars))
            .append("</text><text class=\"role\" x=\"").append(px(x)).append("\" y=\"34\" text-anchor=\"").append(anchor)
            .append("\">").append(e(p.role == "other" ? std::string("point") : p.role)).append("</text></g>");
    }
    m_out.append("</svg>\n<div class=\"ladder-box\"><svg class=\"ladder\" role=\"img\" aria-label=\"ladder diagram of flow ")
        .append(num(int_of(f, "id"))).append("\" viewBox=\"0 0 ").append(px(width)).append(" ").append(px(height))
        .append("\" width=\"").append(px(width)).append("\" height=\"").append(px(height)).append("\">\n");
    for (const Gap& g : gaps) {
        const double mid = (g.y0 + g.y1) / 2;
        m_out.append("<g class=\"gap\"><rect x=\"4\" y=\"").append(px(g.y0 + 3)).append("\" width=\"").append(px(width - 8))
            .append("\" height=\"").append(px(std::max(2.0, g.y1 - g.y0 - 6))).append("\" rx=\"3\"/><text x=\"")
            .append(px(gutter - 16)).append("\" y=\"").append(px(mid + 3.5)).append("\" text-anchor=\"end\">⋯ ")
            .append(html_escape(format_duration(g.ns))).append("</text></g>");
    }
    m_out.append("\n");
    for (std::size_t k = 0; k < lanes.size(); ++k)
        m_out.append("<line class=\"lane\" x1=\"").append(px(lane_x(k))).append("\" y1=\"0\" x2=\"").append(px(lane_x(k)))
            .append("\" y2=\"").append(px(height)).append("\"/>");
    m_out.append("\n");

    // Lost journeys: (direction, last point) -> expected point, from the model.
    std::map<std::pair<bool, std::string>, std::string> lost_next;
    for (const Json& l : array_of(f, "lost"))
        lost_next[{str_of(l, "direction") == "reply", str_of(l, "after")}] = str_of(l, "expected");

    const bool icmp = str_of(f, "proto") == "icmp" || str_of(f, "proto") == "icmpv6";
    auto describe = [&](const Sighting& s) {
        std::string d;
        const bool ports = s.proto == 6 || s.proto == 17 || s.proto == 132;
        d.append(s.src);
        if (ports) d.append(":").append(num(s.sport));
        d.append(" → ").append(s.dst);
        if (ports) d.append(":").append(num(s.dport));
        if (s.icmp_type) {
            if ((s.flags & k_flag_icmp_error) != 0) {
                d.append(" icmp type ").append(num(*s.icmp_type)).append(" code ").append(num(s.icmp_code.value_or(0)));
            } else {
                d.append(" id ").append(num(s.sport));
                if (s.icmp_seq) d.append(" seq ").append(num(*s.icmp_seq));
            }
        }
        if (s.tcp_flags) d.append(" [").append(tcp_flags_text(*s.tcp_flags)).append("]");
        d.append(" ttl ").append(num(s.ttl)).append(", ").append(num(s.payload_len)).append(" payload bytes");
        return d;
    };
    std::set<std::string> labelled;
    double last_label_y = -100;
    std::string labels;  // rewrite labels, drawn last (on top)
    for (const Journey& j : journeys) {
        const char* cls = j.error ? "err" : j.reply ? "rep" : "fwd";
        const Sighting& first = j.sightings.front();
        const Sighting& last = j.sightings.back();
        m_out.append("<g class=\"j ").append(cls).append("\"><title>");
        if (j.error) {
            const Json& err = *j.error;
            m_out.append("ICMP error");
            if (err.contains("type"))
                m_out.append(" (").append(icmp_name(str_of(err, "icmp"), int_of(err, "type"), int_of(err, "code")))
                    .append(") from ").append(e(str_of(err, "reporter")));
        } else {
            m_out.append(j.reply ? "reply" : "forward");
        }
        m_out.append(" · journey ").append(num(j.id)).append(" · ")
            .append(plural(static_cast<std::int64_t>(j.sightings.size()), "point", "points")).append(" · ")
            .append(html_escape(format_duration(last.ts - first.ts))).append(" from first to last\n")
            .append(e(describe(first))).append("</title>");
        // Halos under the segments where the tuple changed, and the path itself.
        std::string d;
        const Sighting* prev = nullptr;
        double px_prev = 0;
        double py_prev = 0;
        for (const Sighting& s : j.sightings) {
            const auto lane = lane_of.find(s.point);
            if (lane == lane_of.end()) {
                prev = nullptr;
                continue;
            }
            const double x = lane_x(lane->second);
            const double yy = y_of[s.ts];
            d.append(prev ? " L" : (d.empty() ? "M" : " M")).append(px(x)).append(" ").append(px(yy));
            if (prev != nullptr) {
                std::vector<std::string> changes;
                auto change = [&](const char* field, const std::string& a, const std::string& b) {
                    if (a != b) changes.push_back(std::string(field) + " " + a + " → " + b);
                };
                change("src", prev->src, s.src);
                change("dst", prev->dst, s.dst);
                if (icmp && (s.flags & k_flag_icmp_error) == 0) {
                    change("id", num(prev->sport), num(s.sport));
                } else if (!icmp) {
                    change("sport", num(prev->sport), num(s.sport));
                    change("dport", num(prev->dport), num(s.dport));
                }
                if (!changes.empty()) {
                    m_out.append("<line class=\"halo\" x1=\"").append(px(px_prev)).append("\" y1=\"").append(px(py_prev))
                        .append("\" x2=\"").append(px(x)).append("\" y2=\"").append(px(yy)).append("\"/>");
                    std::string key = std::string(cls) + "|" + num(prev->point) + "|" + num(s.point);
                    for (const auto& c : changes) key.append("|").append(c);
                    if (labelled.insert(key).second && labelled.size() <= 24) {
                        // Once per kind of change: one line per field, stacked above the middle of the segment.
                        const std::size_t chars = std::max<std::size_t>(
                            12, static_cast<std::size_t>(std::abs(x - px_prev) / 6.4));
                        for (std::size_t k = 0; k < changes.size(); ++k) {
                            const double ly = (py_prev + yy) / 2 - 7 - 13.0 * static_cast<double>(changes.size() - 1 - k);
                            labels.append("<text class=\"rw\" x=\"").append(px((px_prev + x) / 2)).append("\" y=\"")
                                .append(px(ly)).append("\" text-anchor=\"middle\">").append(esc(changes[k], chars))
                                .append("</text>");
                        }
                    }
                }
            }
            prev = &s;
            px_prev = x;
            py_prev = yy;
        }
        m_out.append("<path d=\"").append(d).append("\"/>");
        for (const Sighting& s : j.sightings) {
            const auto lane = lane_of.find(s.point);
            if (lane == lane_of.end()) continue;
            m_out.append("<circle cx=\"").append(px(lane_x(lane->second))).append("\" cy=\"").append(px(y_of[s.ts]))
                .append("\" r=\"3.2\"><title>").append(e(point_name(s.point))).append(" at +")
                .append(html_escape(format_duration(s.ts - t0))).append("\n").append(e(describe(s)))
                .append("</title></circle>");
        }
        if (j.error) {
            const auto lane = lane_of.find(first.point);
            if (lane != lane_of.end())
                m_out.append("<text class=\"warn\" x=\"").append(px(lane_x(lane->second) + 7)).append("\" y=\"")
                    .append(px(y_of[first.ts] - 4)).append("\">⚠</text>");
        }
        // Lost: the model says packets of this direction stopped at this point, never reaching the next one.
        if (!j.error) {
            const auto it = lost_next.find({j.reply, point_name(last.point)});
            const auto from = lane_of.find(last.point);
            if (it != lost_next.end() && from != lane_of.end()) {
                const auto to_idx = m_point_index.find(it->second);
                const auto to = to_idx == m_point_index.end() ? lane_of.end() : lane_of.find(m_points[to_idx->second].id);
                if (to != lane_of.end()) {
                    const double x1 = lane_x(from->second);
                    const double y1 = y_of[last.ts];
                    const double x2 = lane_x(to->second);
                    const double y2 = y1 + 16;
                    m_out.append("<g class=\"lost\"><title>lost: seen at ").append(e(point_name(last.point)))
                        .append(", never at ").append(e(it->second)).append("</title><path d=\"M").append(px(x1))
                        .append(" ").append(px(y1)).append(" L").append(px(x2)).append(" ").append(px(y2))
                        .append("\"/><line class=\"x\" x1=\"").append(px(x2 - 5)).append("\" y1=\"").append(px(y2 - 5))
                        .append("\" x2=\"").append(px(x2 + 5)).append("\" y2=\"").append(px(y2 + 5))
                        .append("\"/><line class=\"x\" x1=\"").append(px(x2 + 5)).append("\" y1=\"").append(px(y2 - 5))
                        .append("\" x2=\"").append(px(x2 - 5)).append("\" y2=\"").append(px(y2 + 5))
                        .append("\"/><text x=\"").append(px(x2 + 9)).append("\" y=\"").append(px(y2 + 4))
                        .append("\">lost</text></g>");
                }
            }
        }
        m_out.append("</g>\n");
        const double ly = y_of[first.ts];
        if (ly - last_label_y >= 12) {
            m_out.append("<text class=\"tlabel ").append(cls).append("\" x=\"").append(px(gutter - 16))
                .append("\" y=\"").append(px(ly + 4)).append("\" text-anchor=\"end\">+")
                .append(html_escape(format_duration(first.ts - t0))).append("</text>");
            last_label_y = ly;
        }
    }
    m_out.append(labels).append("\n</svg></div>\n<p class=\"note\">");
    if (journeys.size() >= total) {
        m_out.append("All ").append(plural(static_cast<std::int64_t>(total), "journey", "journeys")).append(" drawn");
    } else {
        m_out.append("Drawn: ").append(num(static_cast<std::int64_t>(journeys.size()))).append(" of ")
            .append(plural(static_cast<std::int64_t>(total), "journey", "journeys"))
            .append(" (evenly spread over the flow, plus lost ones and ICMP errors)");
    }
    m_out.append(". Time runs down; each gap between two events is drawn on a log scale, and gaps of 1 ms or more "
                 "are shortened (grey bands say how long they were). Hover a packet for its addresses.</p>\n");
}

void Page::box_plots(const Json& f) {
    const Json& hops = array_of(f, "hops");
    if (hops.empty()) return;
    const std::size_t rows = std::min<std::size_t>(hops.size(), 2 * std::max<std::size_t>(m_opt.max_lanes, 1));
    constexpr double width = 1100;
    constexpr double label_w = 300;
    constexpr double plot_x = label_w + 10;
    constexpr double plot_w = 520;
    constexpr double row_h = 24;
    constexpr double top = 22;
    double max_ns = 1000;
    for (std::size_t i = 0; i < rows; ++i) max_ns = std::max(max_ns, static_cast<double>(int_of(hops[i], "max_ns")));
    const double max_axis = time_axis(max_ns) * 1.04;
    auto x_of = [&](double ns) { return plot_x + plot_w * time_axis(ns) / max_axis; };
    const double height = top + row_h * static_cast<double>(rows) + 10;
    m_out.append("<h4>Hop latency</h4><svg class=\"boxplot\" viewBox=\"0 0 ").append(px(width)).append(" ")
        .append(px(height)).append("\" width=\"").append(px(width)).append("\" height=\"").append(px(height))
        .append("\"><g class=\"axis\">");
    for (const Tick& t : k_ticks) {
        if (t.ns > max_ns * 1.04) break;
        const double x = x_of(t.ns);
        m_out.append("<line x1=\"").append(px(x)).append("\" y1=\"").append(px(top - 4)).append("\" x2=\"").append(px(x))
            .append("\" y2=\"").append(px(height - 8)).append("\"/><text x=\"").append(px(x)).append("\" y=\"")
            .append(px(top - 8)).append("\" text-anchor=\"middle\">").append(t.label).append("</text>");
    }
    m_out.append("</g>\n");
    for (std::size_t i = 0; i < rows; ++i) {
        const Json& h = hops[i];
        const char* cls = str_of(h, "direction") == "reply" ? "rep" : "fwd";
        const double yc = top + row_h * static_cast<double>(i) + row_h / 2;
        const auto v = [&](const char* key) { return static_cast<double>(int_of(h, key)); };
        m_out.append("<g><title>").append(e(str_of(h, "direction"))).append(" ").append(e(str_of(h, "from")))
            .append(" → ").append(e(str_of(h, "to"))).append(": n ").append(num(int_of(h, "count")))
            .append(", min ").append(html_escape(format_duration(int_of(h, "min_ns"))))
            .append(", p50 ").append(html_escape(format_duration(int_of(h, "p50_ns"))))
            .append(", p90 ").append(html_escape(format_duration(int_of(h, "p90_ns"))))
            .append(", p99 ").append(html_escape(format_duration(int_of(h, "p99_ns"))))
            .append(", max ").append(html_escape(format_duration(int_of(h, "max_ns"))))
            .append("</title><text class=\"rowlabel ").append(cls).append("\" x=\"8\" y=\"").append(px(yc + 4))
            .append("\">").append(std::string(cls) == "rep" ? "reply " : "forward ")
            .append(esc(str_of(h, "from"), 16)).append(" → ").append(esc(str_of(h, "to"), 16)).append("</text>");
        m_out.append("<line class=\"whisker ").append(cls).append("\" x1=\"").append(px(x_of(v("min_ns"))))
            .append("\" y1=\"").append(px(yc)).append("\" x2=\"").append(px(x_of(v("max_ns")))).append("\" y2=\"")
            .append(px(yc)).append("\"/>");
        const double b0 = x_of(v("p50_ns"));
        const double b1 = std::max(x_of(v("p90_ns")), b0 + 1.5);
        m_out.append("<rect class=\"box ").append(cls).append("\" x=\"").append(px(b0)).append("\" y=\"")
            .append(px(yc - 7)).append("\" width=\"").append(px(b1 - b0)).append("\" height=\"14\" rx=\"2\"/>");
        m_out.append("<line class=\"p50\" x1=\"").append(px(b0)).append("\" y1=\"").append(px(yc - 9)).append("\" x2=\"")
            .append(px(b0)).append("\" y2=\"").append(px(yc + 9)).append("\"/>");
        const double p99 = x_of(v("p99_ns"));
        m_out.append("<path class=\"p99\" d=\"M").append(px(p99)).append(" ").append(px(yc - 5)).append(" l5 5 l-5 5 l-5 -5 z\"/>");
        m_out.append("<text class=\"stat\" x=\"").append(px(plot_x + plot_w + 16)).append("\" y=\"").append(px(yc + 4))
            .append("\">p50 ").append(html_escape(format_duration(int_of(h, "p50_ns"))))
            .append(" · p99 ").append(html_escape(format_duration(int_of(h, "p99_ns"))))
            .append(" · n ").append(num(int_of(h, "count"))).append("</text></g>\n");
    }
    m_out.append("</svg>\n<p class=\"note\">Line: min to max; box: p50 (black tick) to p90; red diamond: p99. "
                 "Percentiles are nearest-rank over all the flow's journeys.");
    if (rows < hops.size())
        m_out.append(" ").append(num(static_cast<std::int64_t>(hops.size() - rows))).append(" more hops in the JSON report.");
    m_out.append("</p>\n");
}

// ------------------------------------------------------------------------------------------------------------
// Histograms of every hop of all flows together (the model's hop_totals), from an even sample of journeys.

void Page::histograms() {
    const Json& totals = array_of(m_report, "hop_totals");
    if (totals.empty()) return;
    const std::size_t shown = std::min(totals.size(), m_opt.max_histograms);
    std::map<std::tuple<bool, std::string, std::string>, std::size_t> index;  // (reply, from, to) -> hop_totals index
    for (std::size_t i = 0; i < shown; ++i)
        index[{str_of(totals[i], "direction") == "reply", str_of(totals[i], "from"), str_of(totals[i], "to")}] = i;

    // The sample covers the flows of the model: all of them, or the ones a --flow filter kept.
    std::int64_t journeys = 0;
    std::int64_t flows_stored = 0;
    {
        auto q = m_db.prepare("SELECT (SELECT count(*) FROM journeys), (SELECT count(*) FROM flows)");
        if (q.step()) {
            journeys = q.column_int(0);
            flows_stored = q.column_int(1);
        }
    }
    const bool subset = static_cast<std::int64_t>(m_flows.size()) < flows_stored;
    Json flow_ids = Json::array();
    if (subset) {
        journeys = 0;
        for (const Json* f : m_flows) {
            journeys += int_of(*f, "journeys");
            flow_ids.push_back(int_of(*f, "id"));
        }
    }
    const auto cap = static_cast<std::int64_t>(std::max<std::size_t>(m_opt.max_histogram_journeys, 1));
    const std::int64_t step = std::max<std::int64_t>(1, (journeys + cap - 1) / cap);
    std::vector<std::vector<std::int64_t>> samples(shown);
    auto q = m_db.prepare(std::string(
        "SELECT j.direction, a.point_id, b.point_id, b.ts_ns - a.ts_ns FROM journeys j "
        "JOIN packets a ON a.journey_id = j.id JOIN packets b ON b.journey_id = j.id AND b.hop = a.hop + 1 "
        "WHERE j.id % ?1 = 0 AND (a.flags & 16) = 0 ") +
        (subset ? "AND j.flow_id IN (SELECT value FROM json_each(?3)) " : "") + "LIMIT ?2");
    q.bind(1, step).bind(2, cap * static_cast<std::int64_t>(m_points.size() + 1));
    if (subset) q.bind(3, flow_ids.dump());
    std::int64_t sampled = 0;
    while (q.step()) {
        const auto it = index.find({q.column_text(0) == "reply", point_name(q.column_int(1)), point_name(q.column_int(2))});
        if (it == index.end()) continue;
        samples[it->second].push_back(q.column_int(3));
        ++sampled;
    }

    m_out.append("<section id=\"hops\"><h2>Hop latency, ").append(subset ? "the flows shown" : "all flows")
        .append("</h2>\n<div class=\"hists\">\n");
    const std::size_t bins = std::clamp<std::size_t>(m_opt.histogram_bins, 1, 400);
    constexpr double w = 520;
    constexpr double h = 170;
    constexpr double left = 40;
    constexpr double plot_w = w - left - 14;
    constexpr double plot_top = 26;
    constexpr double plot_h = 104;
    for (std::size_t i = 0; i < shown; ++i) {
        const Json& hop = totals[i];
        const char* cls = str_of(hop, "direction") == "reply" ? "rep" : "fwd";
        const double max_ns = std::max(1000.0, static_cast<double>(int_of(hop, "max_ns")));
        const double max_axis = time_axis(max_ns) * 1.02;
        auto x_of = [&](double ns) { return left + plot_w * time_axis(ns) / max_axis; };
        std::vector<std::int64_t> count(bins, 0);
        for (std::int64_t v : samples[i]) {
            auto b = static_cast<std::size_t>(time_axis(static_cast<double>(v)) / max_axis * static_cast<double>(bins));
            count[std::min(b, bins - 1)]++;
        }
        const std::int64_t top_count = std::max<std::int64_t>(1, *std::max_element(count.begin(), count.end()));
        m_out.append("<div><h4>").append(str_of(hop, "direction") == "reply" ? "reply · " : "forward · ")
            .append(e(str_of(hop, "from"))).append(" → ").append(e(str_of(hop, "to"))).append("</h4>");
        m_out.append("<svg class=\"hist\" viewBox=\"0 0 ").append(px(w)).append(" ").append(px(h)).append("\" width=\"")
            .append(px(w)).append("\" height=\"").append(px(h)).append("\"><g class=\"axis\">");
        m_out.append("<line x1=\"").append(px(left)).append("\" y1=\"").append(px(plot_top + plot_h)).append("\" x2=\"")
            .append(px(left + plot_w)).append("\" y2=\"").append(px(plot_top + plot_h)).append("\"/>");
        for (const Tick& t : k_ticks) {
            if (t.ns > max_ns * 1.02) break;
            const double x = x_of(t.ns);
            m_out.append("<line x1=\"").append(px(x)).append("\" y1=\"").append(px(plot_top + plot_h)).append("\" x2=\"")
                .append(px(x)).append("\" y2=\"").append(px(plot_top + plot_h + 4)).append("\"/><text x=\"").append(px(x))
                .append("\" y=\"").append(px(plot_top + plot_h + 16)).append("\" text-anchor=\"middle\">").append(t.label)
                .append("</text>");
        }
        m_out.append("<text x=\"").append(px(left - 6)).append("\" y=\"").append(px(plot_top + 8))
            .append("\" text-anchor=\"end\">").append(num(top_count)).append("</text><text x=\"").append(px(left - 6))
            .append("\" y=\"").append(px(plot_top + plot_h)).append("\" text-anchor=\"end\">0</text></g>");
        const double bw = plot_w / static_cast<double>(bins);
        for (std::size_t b = 0; b < bins; ++b) {
            if (count[b] == 0) continue;
            const double bh = std::max(1.5, plot_h * static_cast<double>(count[b]) / static_cast<double>(top_count));
            m_out.append("<rect class=\"bar ").append(cls).append("\" x=\"").append(px(left + bw * static_cast<double>(b) + 0.5))
                .append("\" y=\"").append(px(plot_top + plot_h - bh)).append("\" width=\"").append(px(std::max(1.0, bw - 1)))
                .append("\" height=\"").append(px(bh)).append("\"><title>").append(num(count[b])).append("</title></rect>");
        }
        const double p50 = x_of(static_cast<double>(int_of(hop, "p50_ns")));
        const double p99 = x_of(static_cast<double>(int_of(hop, "p99_ns")));
        const bool close = std::abs(p99 - p50) < 70;
        m_out.append("<line class=\"pline p50l\" x1=\"").append(px(p50)).append("\" y1=\"").append(px(plot_top - 4))
            .append("\" x2=\"").append(px(p50)).append("\" y2=\"").append(px(plot_top + plot_h)).append("\"/>");
        m_out.append("<line class=\"pline p99l\" x1=\"").append(px(p99)).append("\" y1=\"").append(px(plot_top - 4))
            .append("\" x2=\"").append(px(p99)).append("\" y2=\"").append(px(plot_top + plot_h)).append("\"/>");
        const bool p50_left = p50 > w - 140;
        m_out.append("<text class=\"plabel\" x=\"").append(px(p50 + (p50_left ? -4 : 4))).append("\" y=\"")
            .append(px(plot_top - 8)).append("\" text-anchor=\"").append(p50_left ? "end" : "start").append("\">p50 ")
            .append(html_escape(format_duration(int_of(hop, "p50_ns")))).append("</text>");
        const bool p99_left = p99 > w - 140;
        m_out.append("<text class=\"plabel p99t\" x=\"").append(px(p99 + (p99_left ? -4 : 4))).append("\" y=\"")
            .append(px(close ? plot_top + 10 : plot_top - 8)).append("\" text-anchor=\"").append(p99_left ? "end" : "start")
            .append("\">p99 ").append(html_escape(format_duration(int_of(hop, "p99_ns")))).append("</text>");
        m_out.append("</svg><p class=\"note\">n ").append(num(int_of(hop, "count"))).append(" · min ")
            .append(html_escape(format_duration(int_of(hop, "min_ns")))).append(" · max ")
            .append(html_escape(format_duration(int_of(hop, "max_ns"))));
        if (static_cast<std::int64_t>(samples[i].size()) < int_of(hop, "count"))
            m_out.append(" · histogram of ").append(num(static_cast<std::int64_t>(samples[i].size()))).append(" sampled");
        m_out.append("</p></div>\n");
    }
    m_out.append("</div>\n<p class=\"note\">Time axis: log-like (0 ns is on it: taps in one pass through the kernel "
                 "share a timestamp). p50 and p99 are the exact nearest-rank percentiles of all journeys");
    if (step > 1)
        m_out.append("; the bars count every ").append(num(step)).append("th journey (")
            .append(num(sampled)).append(" hop times)");
    m_out.append(".");
    if (shown < totals.size())
        m_out.append(" ").append(num(static_cast<std::int64_t>(totals.size() - shown)))
            .append(" more hops are in the JSON report.");
    m_out.append("</p>\n</section>\n");
}

void Page::icmp_error_table() {
    const Json& errors = array_of(m_report, "icmp_errors");
    if (errors.empty()) return;
    m_out.append("<section id=\"icmp-errors\"><h2>ICMP errors</h2>\n<table><thead><tr><th>journey</th><th>error</th>"
                 "<th>from</th><th>about</th><th class=\"n\">probe ttl</th><th>seen at</th></tr></thead><tbody>\n");
    std::size_t k = 0;
    for (const Json& err : errors) {
        if (k++ >= m_opt.max_table_rows) break;
        const Json& probe = err.contains("probe") ? err["probe"] : empty_object();
        const std::string pproto = str_of(probe, "proto");
        m_out.append("<tr><td>").append(num(int_of(err, "journey"))).append("</td><td><span class=\"badge b-err\">")
            .append(icmp_name(str_of(err, "icmp"), int_of(err, "type"), int_of(err, "code"))).append("</span> ")
            .append(e(str_of(err, "icmp"))).append(" ").append(num(int_of(err, "type"))).append("/")
            .append(num(int_of(err, "code"))).append("</td><td class=\"mono\">").append(e(str_of(err, "reporter")))
            .append("</td><td class=\"mono\">").append(e(pproto)).append(" ").append(e(str_of(probe, "src")));
        if (has_ports(pproto)) m_out.append(":").append(num(int_of(probe, "sport")));
        m_out.append(" → ").append(e(str_of(probe, "dst")));
        if (has_ports(pproto)) m_out.append(":").append(num(int_of(probe, "dport")));
        m_out.append("</td><td class=\"n\">").append(num(int_of(probe, "ttl"))).append("</td><td>");
        const Json& path = array_of(err, "path");
        for (std::size_t i = 0; i < path.size(); ++i) m_out.append(i ? " → " : "").append(e(value_text(path[i])));
        m_out.append("</td></tr>\n");
    }
    m_out.append("</tbody></table>\n");
    if (errors.size() > m_opt.max_table_rows)
        m_out.append("<p class=\"note\">").append(num(static_cast<std::int64_t>(errors.size() - m_opt.max_table_rows)))
            .append(" more in the JSON report.</p>\n");
    m_out.append("</section>\n");
}

// One table per traceroute: a row per TTL, as traceroute prints it, with our points and round trips.
void Page::traceroute_tables() {
    const Json& traces = array_of(m_report, "traceroutes");
    if (traces.empty()) return;
    m_out.append("<section id=\"traceroutes\"><h2>Traceroute</h2>\n");
    for (const Json& t : traces) {
        m_out.append("<h3 class=\"mono\">").append(e(str_of(t, "proto"))).append(" ").append(e(str_of(t, "src")))
            .append(" → ").append(e(str_of(t, "dst"))).append("</h3>\n<table><thead><tr><th class=\"n\">ttl</th>"
            "<th>answered by</th><th class=\"n\">answers</th><th>probe passed</th><th>answer came back via</th>"
            "<th>round trip at each point</th></tr></thead><tbody>\n");
        for (const Json& row : array_of(t, "hops")) {
            const Json* example = nullptr;
            for (const Json& p : array_of(row, "probes"))
                if (example == nullptr || (p.contains("answer") && !example->contains("answer"))) example = &p;
            std::string who;
            for (const Json& r : array_of(row, "reporters")) who += (who.empty() ? "" : ", ") + value_text(r);
            m_out.append("<tr><td class=\"n\">").append(num(int_of(row, "ttl"))).append("</td><td class=\"mono\">")
                .append(who.empty() ? "*" : e(who));
            if (example != nullptr && example->contains("answer"))
                m_out.append(" <span class=\"badge ").append(row.value("reached_destination", false) ? "b-ok" : "b-err")
                    .append("\">").append(e(str_of((*example)["answer"], "kind"))).append("</span>");
            m_out.append("</td><td class=\"n\">").append(num(int_of(row, "answered"))).append("/")
                .append(num(static_cast<std::int64_t>(array_of(row, "probes").size()))).append("</td><td>");
            if (example != nullptr) {
                const Json& path = array_of(*example, "path");
                for (std::size_t i = 0; i < path.size(); ++i) m_out.append(i ? " → " : "").append(e(value_text(path[i])));
            }
            m_out.append("</td><td>");
            if (example != nullptr && example->contains("answer")) {
                const Json& back = array_of((*example)["answer"], "path");
                for (std::size_t i = 0; i < back.size(); ++i) m_out.append(i ? " → " : "").append(e(value_text(back[i])));
            }
            m_out.append("</td><td class=\"mono\">");
            if (example != nullptr)
                for (const Json& r : array_of(*example, "rtt"))
                    m_out.append(e(str_of(r, "point"))).append(" ").append(e(format_duration(int_of(r, "ns")))).append("<br>");
            m_out.append("</td></tr>\n");
        }
        m_out.append("</tbody></table>\n");
    }
    m_out.append("</section>\n");
}

void Page::point_table() {
    m_out.append("<section id=\"points\"><h2>Points, in path order</h2>\n<table><thead><tr><th class=\"n\">#</th>"
                 "<th>point</th><th>role</th><th>netns</th><th>interface</th><th>source</th><th class=\"n\">packets</th>"
                 "<th class=\"n\">kernel drops</th><th>note</th></tr></thead><tbody>\n");
    std::size_t k = 0;
    for (const PointInfo& p : m_points) {
        if (k++ >= m_opt.max_table_rows) break;
        m_out.append("<tr><td class=\"n\">").append(num(static_cast<std::int64_t>(k))).append("</td><td><b>")
            .append(e(p.name)).append("</b></td><td>").append(e(p.role)).append("</td><td>")
            .append(e(p.netns.empty() ? "-" : p.netns)).append("</td><td>").append(e(p.ifname.empty() ? "-" : p.ifname))
            .append("</td><td class=\"mono\">").append(e(p.source)).append("</td><td class=\"n\">").append(num(p.packets))
            .append("</td><td class=\"n").append(p.drops ? " bad" : "").append("\">").append(num(p.drops))
            .append("</td><td>").append(e(p.note)).append("</td></tr>\n");
    }
    m_out.append("</tbody></table>\n");
    if (m_points.size() > m_opt.max_table_rows)
        m_out.append("<p class=\"note\">").append(num(static_cast<std::int64_t>(m_points.size() - m_opt.max_table_rows)))
            .append(" more points in the JSON report.</p>\n");
    m_out.append("</section>\n");
}

}  // namespace

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 8);
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    constexpr const char* k_replacement = "\xEF\xBF\xBD";  // U+FFFD
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        if (c < 0x80) {
            switch (c) {
                case '&': out.append("&amp;"); break;
                case '<': out.append("&lt;"); break;
                case '>': out.append("&gt;"); break;
                case '"': out.append("&quot;"); break;
                case '\'': out.append("&#39;"); break;
                case ':':
                    // "://" is written "&#58;//": the page shows a URL that came from the capture or the command line
                    // as it was, but its bytes hold none (so no tool, and no test, mistakes it for a link).
                    if (text.substr(i + 1, 2) == "//") out.append("&#58;");
                    else out.push_back(':');
                    break;
                case '\t':
                case '\n': out.push_back(static_cast<char>(c)); break;
                default:
                    if (c < 0x20 || c == 0x7F) out.append(k_replacement);
                    else out.push_back(static_cast<char>(c));
            }
            ++i;
            continue;
        }
        // A well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF) is copied; anything else
        // becomes one U+FFFD per byte.
        std::size_t len = 0;
        unsigned char lo = 0x80;
        unsigned char hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        bool ok = len != 0 && i + len <= n;
        for (std::size_t k = 1; ok && k < len; ++k) {
            const unsigned char b = s[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        }
        if (!ok) {
            out.append(k_replacement);
            ++i;
            continue;
        }
        out.append(text.substr(i, len));
        i += len;
    }
    return out;
}

std::string render_html(const Json& report, const store::Database& db, const HtmlOptions& options) {
    return Page(report, db, options).render();
}

}  // namespace hoptrace::report
