#include "report/html/page.hpp"

#include "report/format.hpp"
#include "report/html/assets.hpp"
#include "report/html/parts.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace hoptrace::report {
namespace html {

// ------------------------------------------------------------------------------------------------------------
// What the parts share.

std::string px(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    std::string s = buf;
    if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
    return s;
}

std::string num(std::int64_t v) { return std::to_string(v); }

std::string plural(std::int64_t n, const char* one, const char* many) { return num(n) + " " + (n == 1 ? one : many); }

std::string duration(std::int64_t ns) { return html_escape(format_duration(ns)); }

std::string icmp_name(std::int64_t icmp, std::int64_t type, std::int64_t code) {
    return icmp_error_name(icmp == 58 ? 58 : 1, type, code);
}

std::string tuple_html(std::int64_t proto, const Tuple& t, const Tuple* other, std::size_t n) {
    auto part = [&](const std::string& text, bool changed) {
        std::string s = esc(text, n);
        return changed ? "<mark>" + s + "</mark>" : s;
    };
    auto addr = [&](const std::string& a, bool changed) {
        return part(has_ports(proto) && a.find(':') != std::string::npos ? "[" + a + "]" : a, changed);
    };
    const bool src = other != nullptr && other->src != t.src;
    const bool dst = other != nullptr && other->dst != t.dst;
    const bool sport = other != nullptr && other->sport != t.sport;
    const bool dport = other != nullptr && other->dport != t.dport;
    std::string out;
    if (is_icmp(proto)) {
        out.append(addr(t.src, src))
            .append(" → ")
            .append(addr(t.dst, dst))
            .append(" id ")
            .append(part(num(t.sport), sport));
    } else if (has_ports(proto)) {
        out.append(addr(t.src, src)).append(":").append(part(num(t.sport), sport));
        out.append(" → ").append(addr(t.dst, dst)).append(":").append(part(num(t.dport), dport));
    } else {
        out.append(addr(t.src, src)).append(" → ").append(addr(t.dst, dst));
    }
    return out;
}

double time_axis(double ns) { return std::log10(1.0 + std::max(0.0, ns) / 100.0); }

Page::Page(const ReportModel& m, const HtmlSamples& s) : model(m), samples(s), opt(s.options) {
    for (std::size_t i = 0; i < m.points.size(); ++i) {
        point_index.emplace(m.points[i].name, i);
        point_by_id.emplace(m.points[i].id, i);
    }
}

std::string Page::point_name(std::int64_t id) const {
    const auto it = point_by_id.find(id);
    return it == point_by_id.end() ? "point#" + num(id) : model.points[it->second].name;
}

const std::vector<std::size_t>* Page::errors_of(std::int64_t flow) const {
    const auto it = samples.errors_of_flow.find(flow);
    return it == samples.errors_of_flow.end() ? nullptr : &it->second;
}

namespace {

const char* direction_name(FlowDirection d) { return correlate::to_string(d); }

std::string utc_time(std::int64_t ns) {
    const auto secs = static_cast<std::time_t>(ns / 1'000'000'000);
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

std::int64_t lost_count(const Flow& f) {
    std::int64_t n = 0;
    for (const Loss& l : f.lost) n += l.count;
    return n;
}

std::string flow_link(const Page& page, std::int64_t id) {
    if (!page.samples.drawn.contains(id)) return num(id);
    return "<a href=\"#flow-" + num(id) + "\">" + num(id) + "</a>";
}

std::string conntrack_badge(const Page& page, ConntrackState state) {
    if (state == ConntrackState::agrees) return "<span class=\"badge b-ok\">agrees</span>";
    if (state == ConntrackState::differs) return "<span class=\"badge b-bad\">differs</span>";
    return "<span class=\"badge b-none\">" + page.e(to_string(state)) + "</span>";
}

void header(Page& page) {
    const ReportModel& m = page.model;
    std::string& out = page.out;
    std::int64_t packets = 0;
    std::int64_t drops = 0;
    for (const Point& p : m.points) {
        packets += p.packets;
        drops += p.kernel_drops;
    }
    std::int64_t journeys = 0;
    std::int64_t lost = 0;
    std::int64_t rewritten = 0;
    std::int64_t first = 0;
    std::int64_t last = 0;
    for (const Flow& f : m.flows) {
        journeys += f.journeys;
        lost += lost_count(f);
        if (!f.rewrites.empty()) ++rewritten;
        if (f.first_ts_ns != 0 && (first == 0 || f.first_ts_ns < first)) first = f.first_ts_ns;
        last = std::max(last, f.last_ts_ns);
    }
    const auto errors = static_cast<std::int64_t>(m.icmp_errors.size());

    out.append("<header><div class=\"wrap\">\n<h1>hoptrace report<small>");
    if (first != 0) out.append(utc_time(first)).append(" · ").append(duration(last - first));
    out.append("</small></h1>\n");
    const std::string& command = m.capture.command_line;
    const std::string& host = m.capture.host;
    if (!command.empty() || !host.empty()) {
        out.append("<div class=\"meta\">");
        if (!host.empty()) out.append("host <b>").append(page.e(host)).append("</b> · ");
        if (!command.empty()) out.append("<code>").append(page.e(command)).append("</code>");
        out.append("</div>\n");
    }
    if (m.flow_filter && !m.flow_filter->empty())
        out.append("<div class=\"meta\">only the flows that match <code>")
            .append(page.e(*m.flow_filter))
            .append("</code></div>\n");
    auto card = [&](std::int64_t n, const char* one, const char* many, bool bad) {
        out.append("<div class=\"card").append(bad ? " bad" : "").append("\"><b>").append(num(n));
        out.append("</b><span>").append(n == 1 ? one : many).append("</span></div>");
    };
    out.append("<div class=\"cards\">");
    card(static_cast<std::int64_t>(m.points.size()), "point", "points", false);
    card(packets, "sighting", "sightings", false);
    card(static_cast<std::int64_t>(m.flows.size()), "flow", "flows", false);
    card(journeys, "journey", "journeys", false);
    card(rewritten, "flow rewritten (NAT)", "flows rewritten (NAT)", false);
    card(lost, "packet lost", "packets lost", lost > 0);
    card(errors, "ICMP error", "ICMP errors", errors > 0);
    card(drops, "kernel drop", "kernel drops", drops > 0);
    out.append("</div>\n</div></header>\n");
}

void legend(Page& page) {
    std::string& out = page.out;
    out.append("<section class=\"legend\" aria-label=\"legend\">");
    auto item = [&](const std::string& svg, const char* text) {
        out.append("<span><svg width=\"46\" height=\"18\" viewBox=\"0 0 46 18\" aria-hidden=\"true\">")
            .append(svg)
            .append("</svg>")
            .append(text)
            .append("</span>");
    };
    item(
        "<g class=\"j fwd lg\"><path d=\"M3 5 L43 13\"/><circle cx=\"3\" cy=\"5\" r=\"3\"/><circle cx=\"43\" cy=\"13\" "
        "r=\"3\"/></g>",
        "forward packet (from the flow's initiator)");
    item(
        "<g class=\"j rep lg\"><path d=\"M43 5 L3 13\"/><circle cx=\"43\" cy=\"5\" r=\"3\"/><circle cx=\"3\" cy=\"13\" "
        "r=\"3\"/></g>",
        "reply packet");
    item(
        "<line class=\"halo\" x1=\"6\" y1=\"9\" x2=\"40\" y2=\"9\"/><g class=\"j fwd lg\"><path d=\"M6 9 L40 9\"/></g>",
        "a field rewritten (NAT) on this hop");
    item(
        "<g class=\"lost\"><path d=\"M4 9 L30 9\"/><line class=\"x\" x1=\"33\" y1=\"4\" x2=\"42\" y2=\"14\"/>"
        "<line class=\"x\" x1=\"42\" y1=\"4\" x2=\"33\" y2=\"14\"/></g>",
        "lost: not seen at the next point");
    item("<g class=\"j err lg\"><path d=\"M3 9 L43 9\"/></g>", "ICMP error");
    item("<g class=\"gap\"><rect x=\"2\" y=\"3\" width=\"42\" height=\"12\" rx=\"2\"/></g>",
         "time gap compressed (ladders)");
    out.append("</section>\n");
}

void flow_row(Page& page, const Flow& f) {
    std::string& out = page.out;
    const std::int64_t lost = lost_count(f);
    const auto* errs = page.errors_of(f.id);
    const auto errors = errs == nullptr ? 0 : static_cast<std::int64_t>(errs->size());
    out.append("<tr><td>").append(flow_link(page, f.id));
    out.append("</td><td>")
        .append(page.e(proto_name(f.proto)))
        .append("</td><td class=\"mono\">")
        .append(tuple_html(f.proto, f.original, nullptr, page.text_limit()))
        .append("</td><td class=\"mono\">");
    if (f.translated == f.original) out.append("<span class=\"badge b-none\">unchanged</span>");
    else out.append(tuple_html(f.proto, f.translated, &f.original, page.text_limit()));
    out.append("</td><td class=\"n\">").append(num(f.forward_journeys)).append(" / ").append(num(f.reply_journeys));
    if (f.ambiguous > 0)
        out.append(
               " <span class=\"badge b-bad\" title=\"journeys that could have been another flow's: not "
               "decided by the evidence\">")
            .append(num(f.ambiguous))
            .append(" ambiguous</span>");
    out.append("</td><td class=\"n\">")
        .append(num(f.packets))
        .append("</td><td class=\"n")
        .append(lost ? " bad" : "")
        .append("\">")
        .append(num(lost))
        .append("</td><td class=\"n")
        .append(errors ? " bad" : "")
        .append("\">")
        .append(num(errors))
        .append("</td><td>");
    if (f.conntrack) out.append(conntrack_badge(page, f.conntrack->state));
    else out.append("<span class=\"badge b-none\">no conntrack</span>");
    out.append("</td><td class=\"n\">").append(duration(f.last_ts_ns - f.first_ts_ns)).append("</td></tr>\n");
}

void flow_table(Page& page) {
    const ReportModel& m = page.model;
    const HtmlSamples& h = page.samples;
    std::string& out = page.out;
    out.append(
        "<section id=\"flows\"><h2>Flows</h2>\n<table><thead><tr><th>flow</th><th>proto</th>"
        "<th>original</th><th>translated</th><th class=\"n\">journeys (fwd / reply)</th>"
        "<th class=\"n\">sightings</th><th class=\"n\">lost</th><th class=\"n\">ICMP errors</th>"
        "<th>conntrack</th><th class=\"n\">duration</th></tr></thead><tbody>\n");
    for (const std::size_t i : h.listed) flow_row(page, m.flows[i]);
    out.append("</tbody></table>\n");
    std::int64_t ambiguous = 0;
    for (const Flow& f : m.flows) ambiguous += f.ambiguous;
    if (ambiguous > 0)
        out.append("<p class=\"note bad\">")
            .append(num(ambiguous))
            .append(
                " journeys are ambiguous: one of their sightings could have continued another flow's journey just "
                "as well, and nothing (conntrack, a learned translation, the TTL, the path, the time) decided it. "
                "Their paths and rewrites are the likeliest, not proven.</p>\n");
    for (const std::size_t i : h.listed) {
        const Flow& f = m.flows[i];
        if (!f.pmtu) continue;
        const PathMtu& p = *f.pmtu;
        out.append("<p class=\"note\">Flow ")
            .append(num(f.id))
            .append(": ")
            .append(num(p.lost_min_size))
            .append("-byte DF packets did not get through after ")
            .append(page.e(p.after))
            .append(", packets up to ")
            .append(num(p.passed_max_size))
            .append(" bytes pass; frag-needed: ")
            .append(page.e(to_string(p.frag_needed)))
            .append(p.mtu ? " (MTU " + num(*p.mtu) + ")" : std::string())
            .append(".</p>\n");
    }
    if (h.listed.size() < m.flows.size())
        out.append("<p class=\"note\">")
            .append(num(static_cast<std::int64_t>(m.flows.size() - h.listed.size())))
            .append(
                " more flows (the quietest) are not listed; <code>hoptrace report --format json</code> "
                "lists all.</p>\n");
    if (h.drawn.size() < m.flows.size())
        out.append("<p class=\"note\">Drawn in full below: ")
            .append(num(static_cast<std::int64_t>(h.drawn.size())))
            .append(" of ")
            .append(num(static_cast<std::int64_t>(m.flows.size())))
            .append(" flows (those with losses or ICMP errors first, then the busiest).</p>\n");
    out.append("</section>\n");
}

void nat_row(Page& page, const Flow& f, bool& any_conntrack, std::string& body) {
    body.append("<tr><td>").append(flow_link(page, f.id));
    body.append("</td><td>")
        .append(page.e(proto_name(f.proto)))
        .append("</td><td class=\"mono\">")
        .append(tuple_html(f.proto, f.original, nullptr, page.text_limit()))
        .append("</td><td>⇄</td><td class=\"mono\">")
        .append(tuple_html(f.proto, f.translated, &f.original, page.text_limit()))
        .append("</td><td>");
    // One line per (direction, pair of points): the fields rewritten there.
    std::map<std::tuple<std::string, std::string, std::string>, std::vector<std::string>> where;
    for (const Rewrite& r : f.rewrites) {
        auto& fields = where[{direction_name(r.direction), r.from_point, r.to_point}];
        if (std::find(fields.begin(), fields.end(), r.field) == fields.end()) fields.push_back(r.field);
    }
    for (const auto& [key, fields] : where) {
        const auto& [direction, from, to] = key;
        body.append(page.e(from))
            .append(" → ")
            .append(page.e(to))
            .append(" <span class=\"badge b-nat\">")
            .append(page.e(direction));
        for (std::size_t k = 0; k < fields.size(); ++k) body.append(k ? ", " : " ").append(page.e(fields[k]));
        body.append("</span>");
        std::set<std::string> rules;  // --trace-rules: the nat rules that made them
        for (const Rewrite& r : f.rewrites)
            if (r.rule && direction_name(r.direction) == direction && r.from_point == from && r.to_point == to)
                rules.insert(rule_text(*r.rule));
        for (const std::string& rule : rules) body.append(" by <code>").append(page.e(rule)).append("</code>");
        body.append("<br>");
    }
    body.append("</td><td class=\"mono\">");
    if (f.conntrack) {
        any_conntrack = true;
        const Conntrack& c = *f.conntrack;
        body.append(conntrack_badge(page, c.state));
        if (c.state == ConntrackState::agrees || c.state == ConntrackState::differs) body.append(" ");
        if (c.entry) body.append(tuple_html(f.proto, c.entry->translated, &f.translated, page.text_limit()));
    } else {
        body.append("<span class=\"badge b-none\">not captured live</span>");
    }
    body.append("</td></tr>\n");
}

void nat_table(Page& page) {
    std::string& out = page.out;
    out.append("<section id=\"nat\"><h2>NAT</h2>\n");
    std::size_t rows = 0;
    std::size_t unchanged = 0;
    bool any_conntrack = false;
    std::string body;
    for (const std::size_t i : page.samples.listed) {
        const Flow& f = page.model.flows[i];
        if (f.translated == f.original && f.rewrites.empty()) {
            ++unchanged;
            continue;
        }
        ++rows;
        nat_row(page, f, any_conntrack, body);
    }
    if (rows == 0) {
        out.append("<p>No flow was rewritten between the points.</p>\n");
    } else {
        out.append(
               "<table><thead><tr><th>flow</th><th>proto</th><th>original (as sent)</th><th></th>"
               "<th>translated (as it left)</th><th>rewritten between</th><th>conntrack's translation</th>"
               "</tr></thead><tbody>\n")
            .append(body)
            .append("</tbody></table>\n<p class=\"note\">Marked: the fields NAT changed. ");
        if (any_conntrack)
            out.append(
                "The last column is the kernel's conntrack entry for the flow (its reply tuple, reversed), "
                "marked where it differs from what the packets showed.");
        else out.append("Imported captures have no conntrack table to compare with.");
        out.append("</p>\n");
    }
    if (unchanged > 0 && rows > 0)
        out.append("<p class=\"note\">")
            .append(plural(static_cast<std::int64_t>(unchanged), "flow was", "flows were"))
            .append(" not rewritten.</p>\n");
    out.append("</section>\n");
}

// The line under a drawn flow's title: counts, path, observers, conntrack, losses, segmentation, ICMP errors.
void flow_summary(Page& page, const Flow& f) {
    std::string& out = page.out;
    out.append("<p class=\"note\">")
        .append(plural(f.forward_journeys, "forward", "forward"))
        .append(" and ")
        .append(plural(f.reply_journeys, "reply", "replies"))
        .append(" · ")
        .append(plural(f.packets, "sighting", "sightings"));
    if (!f.path.empty()) {
        out.append(" · path ");
        for (std::size_t i = 0; i < f.path.size(); ++i) out.append(i ? " → " : "").append(page.e(f.path[i]));
    }
    std::set<std::string> observed_by;  // a bridge that switched the flow between two ports: not on the path
    for (const Observer& o : f.observers)
        if (observed_by.insert(o.point).second)
            out.append(" · observed by ").append(page.e(o.point)).append(" (bridge-local, not a hop)");
    if (f.conntrack) out.append(" · conntrack ").append(conntrack_badge(page, f.conntrack->state));
    for (const Loss& l : f.lost) {
        const bool dropped = l.cause == LossCause::dropped;
        out.append(" · <span class=\"badge ")
            .append(dropped ? "b-bad\">✕ " : "b-err\">⚠ ")
            .append(num(l.count))
            .append(" ")
            .append(page.e(direction_name(l.direction)));
        if (l.cause == LossCause::expired) out.append(" expired (TTL) after ");
        else if (l.cause == LossCause::rejected) out.append(" answered by an ICMP error after ");
        else out.append(" lost after ");
        out.append(page.e(l.after)).append(", never at ").append(page.e(l.expected)).append("</span>");
        for (const FirewallRule& r : l.rules)  // --trace-rules: the rule that dropped them
            out.append(" dropped by <code>")
                .append(page.e(rule_text(r)))
                .append("</code> (")
                .append(plural(r.packets, "traced packet", "traced packets"))
                .append(")");
    }
    for (const Segmentation& g : f.segmentation) {  // GSO/TSO super-packets cut into segments
        out.append(" · <span class=\"badge b-none\">")
            .append(page.e(direction_name(g.direction)))
            .append(" ")
            .append(plural(g.super_packets, "super-packet", "super-packets"))
            .append(" cut into ")
            .append(plural(g.segments, "segment", "segments"))
            .append(" between ")
            .append(page.e(g.from))
            .append(" and ")
            .append(page.e(g.to))
            .append(" (GSO/TSO)</span>");
    }
    if (const auto* errs = page.errors_of(f.id))
        out.append(" · <span class=\"badge b-err\">⚠ ")
            .append(plural(static_cast<std::int64_t>(errs->size()), "ICMP error", "ICMP errors"))
            .append("</span>");
    out.append("</p>\n");
}

void flow_detail(Page& page, const Flow& f) {
    std::string& out = page.out;
    out.append("<section class=\"flow\" id=\"flow-")
        .append(num(f.id))
        .append("\">\n<div class=\"flowhead\"><h3>Flow ")
        .append(num(f.id))
        .append(" · ")
        .append(page.e(proto_name(f.proto)))
        .append("</h3><span class=\"t\">")
        .append(tuple_html(f.proto, f.original, nullptr, page.text_limit()))
        .append("</span>");
    if (f.translated != f.original)
        out.append("<span>⇒</span><span class=\"t\">")
            .append(tuple_html(f.proto, f.translated, &f.original, page.text_limit()))
            .append("</span>");
    out.append("</div>\n");
    flow_summary(page, f);
    ladder(page, f);
    box_plots(page, f);
    out.append("</section>\n");
}

void icmp_error_table(Page& page) {
    const auto& errors = page.model.icmp_errors;
    if (errors.empty()) return;
    std::string& out = page.out;
    out.append(
        "<section id=\"icmp-errors\"><h2>ICMP errors</h2>\n<table><thead><tr><th>journey</th><th>error</th>"
        "<th>from</th><th>about</th><th class=\"n\">probe ttl</th><th>seen at</th></tr></thead><tbody>\n");
    std::size_t k = 0;
    for (const IcmpError& err : errors) {
        if (k++ >= page.opt.max_table_rows) break;
        const Probe& probe = err.probe;
        out.append("<tr><td>")
            .append(num(err.journey))
            .append("</td><td><span class=\"badge b-err\">")
            .append(icmp_name(err.icmp, err.type, err.code))
            .append("</span> ")
            .append(page.e(proto_name(err.icmp)))
            .append(" ")
            .append(num(err.type))
            .append("/")
            .append(num(err.code))
            .append("</td><td class=\"mono\">")
            .append(page.e(err.reporter))
            .append("</td><td class=\"mono\">")
            .append(page.e(proto_name(probe.proto)))
            .append(" ")
            .append(page.e(probe.src));
        if (has_ports(probe.proto)) out.append(":").append(num(probe.sport));
        out.append(" → ").append(page.e(probe.dst));
        if (has_ports(probe.proto)) out.append(":").append(num(probe.dport));
        out.append("</td><td class=\"n\">").append(num(probe.ttl)).append("</td><td>");
        for (std::size_t i = 0; i < err.path.size(); ++i) out.append(i ? " → " : "").append(page.e(err.path[i]));
        out.append("</td></tr>\n");
    }
    out.append("</tbody></table>\n");
    if (errors.size() > page.opt.max_table_rows)
        out.append("<p class=\"note\">")
            .append(num(static_cast<std::int64_t>(errors.size() - page.opt.max_table_rows)))
            .append(" more in the JSON report.</p>\n");
    out.append("</section>\n");
}

void traceroute_row(Page& page, const TraceHop& row) {
    std::string& out = page.out;
    const TraceProbe* example = nullptr;  // the first answered probe, else the first
    for (const TraceProbe& p : row.probes)
        if (example == nullptr || (p.answer && !example->answer)) example = &p;
    std::string who;
    for (const std::string& r : row.reporters) who += (who.empty() ? "" : ", ") + r;
    out.append("<tr><td class=\"n\">")
        .append(num(row.ttl))
        .append("</td><td class=\"mono\">")
        .append(who.empty() ? "*" : page.e(who));
    if (example != nullptr && example->answer)
        out.append(" <span class=\"badge ")
            .append(row.reached_destination ? "b-ok" : "b-err")
            .append("\">")
            .append(page.e(example->answer->kind))
            .append("</span>");
    out.append("</td><td class=\"n\">")
        .append(num(row.answered))
        .append("/")
        .append(num(static_cast<std::int64_t>(row.probes.size())))
        .append("</td><td>");
    auto path = [&](const std::vector<std::string>& points) {
        for (std::size_t i = 0; i < points.size(); ++i) out.append(i ? " → " : "").append(page.e(points[i]));
    };
    if (example != nullptr) path(example->path);
    out.append("</td><td>");
    if (example != nullptr && example->answer) path(example->answer->path);
    out.append("</td><td class=\"mono\">");
    if (example != nullptr)
        for (const RoundTrip& r : example->rtt)
            out.append(page.e(r.point)).append(" ").append(page.e(format_duration(r.ns))).append("<br>");
    out.append("</td></tr>\n");
}

// One table per traceroute: a row per TTL, as traceroute prints it, with our points and round trips.
void traceroute_tables(Page& page) {
    const auto& traces = page.model.traceroutes;
    if (traces.empty()) return;
    std::string& out = page.out;
    out.append("<section id=\"traceroutes\"><h2>Traceroute</h2>\n");
    for (const Traceroute& t : traces) {
        out.append("<h3 class=\"mono\">")
            .append(page.e(proto_name(t.proto)))
            .append(" ")
            .append(page.e(t.src))
            .append(" → ")
            .append(page.e(t.dst))
            .append(
                "</h3>\n<table><thead><tr><th class=\"n\">ttl</th>"
                "<th>answered by</th><th class=\"n\">answers</th><th>probe passed</th><th>answer came back via</th>"
                "<th>round trip at each point</th></tr></thead><tbody>\n");
        for (const TraceHop& row : t.hops) traceroute_row(page, row);
        out.append("</tbody></table>\n");
    }
    out.append("</section>\n");
}

void point_table(Page& page) {
    std::string& out = page.out;
    const auto& points = page.model.points;
    out.append(
        "<section id=\"points\"><h2>Points, in path order</h2>\n<table><thead><tr><th class=\"n\">#</th>"
        "<th>point</th><th>role</th><th>netns</th><th>interface</th><th>source</th><th class=\"n\">packets</th>"
        "<th class=\"n\">kernel drops</th><th>note</th></tr></thead><tbody>\n");
    std::size_t k = 0;
    for (const Point& p : points) {
        if (k++ >= page.opt.max_table_rows) break;
        out.append("<tr><td class=\"n\">")
            .append(num(static_cast<std::int64_t>(k)))
            .append("</td><td><b>")
            .append(page.e(p.name))
            .append("</b></td><td>")
            .append(page.e(hoptrace::to_string(p.role)))
            .append("</td><td>")
            .append(page.e(p.netns.empty() ? "-" : p.netns))
            .append("</td><td>")
            .append(page.e(p.ifname.empty() ? "-" : p.ifname))
            .append("</td><td class=\"mono\">")
            .append(page.e(p.source))
            .append("</td><td class=\"n\">")
            .append(num(p.packets))
            .append("</td><td class=\"n")
            .append(p.kernel_drops ? " bad" : "")
            .append("\">")
            .append(num(p.kernel_drops))
            .append("</td><td>")
            .append(page.e(p.note));
        if (p.container) {  // the container behind the point, as the engine said
            const ContainerInfo& c = *p.container;
            out.append(p.note.empty() ? "" : "<br>")
                .append("container <b>")
                .append(page.e(c.name))
                .append("</b> <span class=\"mono\">")
                .append(page.e(c.id.substr(0, 12)))
                .append("</span>, image ")
                .append(page.e(c.image));
            for (const auto& n : c.networks) out.append(", network ").append(page.e(n));
            for (const auto& port : c.ports)
                out.append(", published <span class=\"mono\">").append(page.e(port)).append("</span>");
        }
        out.append("</td></tr>\n");
    }
    out.append("</tbody></table>\n");
    if (points.size() > page.opt.max_table_rows)
        out.append("<p class=\"note\">")
            .append(num(static_cast<std::int64_t>(points.size() - page.opt.max_table_rows)))
            .append(" more points in the JSON report.</p>\n");
    out.append("</section>\n");
}

// The script's SHA-256 (of page.js as embedded, without its final newline) is in the Content-Security-Policy:
// change one, change the other (the e2e test tests/e2e/html_report.py recomputes it; a stale hash leaves the page
// unmarked). The script marks the page as rendered once the DOM is complete and shows any script error or blocked
// load (there should be none) in the page, so a headless browser's --dump-dom reveals both.
constexpr const char* k_script_hash = "sha256-POUqImPInGUr+o6ZC7ZVok4eZRNJKr4lqRR/JY4toAw=";

void head(Page& page) {
    std::string& out = page.out;
    out.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.append(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src '");
    out.append(k_script_hash);
    out.append("'; base-uri 'none'; form-action 'none'\">\n");
    out.append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.append("<title>hoptrace report: ")
        .append(plural(static_cast<std::int64_t>(page.model.flows.size()), "flow", "flows"))
        .append("</title>\n<style>\n")
        .append(page_css())
        .append("\n</style>\n<script>")
        .append(page_js())
        .append("</script>\n</head>\n<body>\n");
}

}  // namespace
}  // namespace html

std::string render_html(const ReportModel& model) {
    if (!model.html) throw std::invalid_argument("render_html: the model was loaded without its HTML samples");
    html::Page page(model, *model.html);
    std::string& out = page.out;
    out.reserve(std::size_t{64} * 1024);
    html::head(page);
    html::header(page);
    out.append("<main class=\"wrap\">\n");
    html::legend(page);
    html::path_diagram(page);
    html::flow_table(page);
    html::nat_table(page);
    for (const Flow& f : model.flows)
        if (page.samples.drawn.contains(f.id)) html::flow_detail(page, f);
    html::histograms(page);
    html::icmp_error_table(page);
    html::traceroute_tables(page);
    html::point_table(page);
    out.append("</main>\n<footer class=\"wrap\">");
    out.append("Made by hoptrace");
    if (model.capture.version) out.append(" ").append(page.e(*model.capture.version));
    out.append(" from ").append(
        page.e(model.capture.database.empty() ? std::string("an in-memory database") : model.capture.database));
    out.append(". Self-contained: nothing is loaded from anywhere. <span id=\"render-status\"></span></footer>\n");
    out.append("</body>\n</html>\n");
    return std::move(page.out);
}

}  // namespace hoptrace::report
