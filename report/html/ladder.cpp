// Per drawn flow: the ladder, a sequence diagram of a sample of its journeys (model.html->ladders): one lane per
// point, time running down on a warped axis, each journey a line crossing the lanes at its timestamps.

#include "report/html/parts.hpp"

#include "report/format.hpp"
#include "report/html/escape.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

namespace hoptrace::report::html {
namespace {

constexpr double k_width = 1100;
constexpr double k_gutter = 118;
constexpr double k_right = 70;
constexpr double k_span = k_width - k_gutter - k_right;
constexpr double k_top = 16;
constexpr std::int64_t k_break_ns = 1'000'000;

struct Gap {
    double y0, y1;
    std::int64_t ns;
};

struct Lanes {
    std::vector<std::size_t> points;         // model.points indexes
    std::map<std::int64_t, std::size_t> of;  // points.id -> lane
    [[nodiscard]] double x(std::size_t k) const {
        return points.size() == 1 ? k_gutter + k_span / 2
                                  : k_gutter + k_span * static_cast<double>(k) / static_cast<double>(points.size() - 1);
    }
};

// Vertical axis: time, every gap between two consecutive events drawn on a log-like scale and gaps beyond 1 ms
// capped (and marked): a journey takes microseconds, the next one may come seconds later.
struct TimeAxis {
    std::map<std::int64_t, double> y_of;
    std::vector<Gap> gaps;
    double height = 0;
};

// The flow's path, then other points its drawn journeys crossed, in path order; at most max_lanes.
Lanes lanes_of(const Page& page, const Flow& f, const std::vector<LadderJourney>& journeys) {
    Lanes lanes;
    std::set<std::size_t> in_lanes;
    for (const std::string& name : f.path) {
        const auto it = page.point_index.find(name);
        if (it != page.point_index.end() && in_lanes.insert(it->second).second) lanes.points.push_back(it->second);
    }
    std::set<std::size_t> extra;
    for (const LadderJourney& j : journeys)
        for (const LadderSighting& s : j.sightings)
            if (const auto it = page.point_by_id.find(s.point);
                it != page.point_by_id.end() && !in_lanes.contains(it->second))
                extra.insert(it->second);
    for (std::size_t i : extra) lanes.points.push_back(i);
    const std::size_t max_lanes = std::max<std::size_t>(page.opt.max_lanes, 1);
    if (lanes.points.size() > max_lanes) lanes.points.resize(max_lanes);
    for (std::size_t k = 0; k < lanes.points.size(); ++k) lanes.of[page.model.points[lanes.points[k]].id] = k;
    return lanes;
}

TimeAxis time_axis_of(const std::vector<LadderJourney>& journeys) {
    std::vector<std::int64_t> events;
    for (const LadderJourney& j : journeys)
        for (const LadderSighting& s : j.sightings) events.push_back(s.ts_ns);
    std::sort(events.begin(), events.end());
    events.erase(std::unique(events.begin(), events.end()), events.end());
    TimeAxis axis;
    double y = k_top;
    for (std::size_t i = 0; i < events.size(); ++i) {
        if (i > 0) {
            const auto d = static_cast<double>(events[i] - events[i - 1]);
            const double step = std::min(34.0, std::max(4.0, 3.2 * std::log2(1.0 + d / 250.0)));
            if (events[i] - events[i - 1] >= k_break_ns) axis.gaps.push_back({y, y + step, events[i] - events[i - 1]});
            y += step;
        }
        axis.y_of[events[i]] = y;
    }
    axis.height = y + 34;
    return axis;
}

std::string tcp_flags_text(std::int64_t f) {
    static constexpr std::pair<int, const char*> names[] = {{2, "SYN"}, {16, "ACK"}, {1, "FIN"},
                                                            {4, "RST"}, {8, "PSH"},  {32, "URG"}};
    std::string out;
    for (const auto& [bit, name] : names)
        if ((f & bit) != 0) out.append(out.empty() ? "" : ",").append(name);
    return out.empty() ? "none" : out;
}

// The packet as its point saw it, for the hover text.
std::string describe(const LadderSighting& s) {
    std::string d;
    const bool ports = has_ports(s.proto);
    d.append(s.src);
    if (ports) d.append(":").append(num(s.sport));
    d.append(" → ").append(s.dst);
    if (ports) d.append(":").append(num(s.dport));
    if (s.icmp_type) {
        if (s.icmp_error) {
            d.append(" icmp type ").append(num(*s.icmp_type)).append(" code ").append(num(s.icmp_code.value_or(0)));
        } else {
            d.append(" id ").append(num(s.sport));
            if (s.icmp_seq) d.append(" seq ").append(num(*s.icmp_seq));
        }
    }
    if (s.tcp_flags) d.append(" [").append(tcp_flags_text(*s.tcp_flags)).append("]");
    d.append(" ttl ").append(num(s.ttl)).append(", ").append(num(s.payload_len)).append(" payload bytes");
    return d;
}

void lane_heads(Page& page, const Lanes& lanes) {
    std::string& out = page.out;
    const std::size_t name_chars =
        lanes.points.size() <= 1
            ? 40
            : std::max<std::size_t>(
                  6, static_cast<std::size_t>(k_span / static_cast<double>(lanes.points.size() - 1) / 7.5));
    // A separate SVG above the scrolling ladder, so they stay in view.
    out.append("<svg class=\"lanehead\" viewBox=\"0 0 ")
        .append(px(k_width))
        .append(" 46\" width=\"")
        .append(px(k_width))
        .append("\" height=\"46\">");
    out.append("<text class=\"role\" x=\"8\" y=\"40\">TIME ↓</text>");
    for (std::size_t k = 0; k < lanes.points.size(); ++k) {
        const Point& p = page.model.points[lanes.points[k]];
        const std::string role = hoptrace::to_string(p.role);
        const bool edge_left = k == 0 && lanes.points.size() > 1;
        const bool edge_right = k + 1 == lanes.points.size() && lanes.points.size() > 1;
        const char* anchor = edge_left ? "start" : edge_right ? "end" : "middle";
        const double x = lanes.x(k) + (edge_left ? -10 : edge_right ? 10 : 0);
        out.append("<g><title>")
            .append(page.e(p.name))
            .append(" (")
            .append(page.e(role))
            .append(")</title><text class=\"name\" x=\"")
            .append(px(x))
            .append("\" y=\"18\" text-anchor=\"")
            .append(anchor)
            .append("\">")
            .append(esc(p.name, name_chars))
            .append("</text><text class=\"role\" x=\"")
            .append(px(x))
            .append("\" y=\"34\" text-anchor=\"")
            .append(anchor)
            .append("\">")
            .append(page.e(p.role == Role::other ? std::string("point") : role))
            .append("</text></g>");
    }
    out.append("</svg>\n");
}

// What changed between two sightings of a journey: "src 172.17.0.3 → 192.168.43.116" per field.
std::vector<std::string> changes_between(const LadderSighting& prev, const LadderSighting& s, bool icmp) {
    std::vector<std::string> changes;
    auto change = [&](const char* field, const std::string& a, const std::string& b) {
        if (a != b) changes.push_back(std::string(field) + " " + a + " → " + b);
    };
    change("src", prev.src, s.src);
    change("dst", prev.dst, s.dst);
    if (icmp && !s.icmp_error) {
        change("id", num(prev.sport), num(s.sport));
    } else if (!icmp) {
        change("sport", num(prev.sport), num(s.sport));
        change("dport", num(prev.dport), num(s.dport));
    }
    return changes;
}

// What the journeys share while they are drawn: rewrite labels (once per kind, drawn last, on top).
struct Labels {
    std::set<std::string> labelled;
    std::string svg;
};

// The journey's path with halos under the segments where the tuple changed.
void journey_path(Page& page, const Flow& f, const LadderJourney& j, const char* cls, const Lanes& lanes,
                  const TimeAxis& axis, Labels& labels) {
    std::string& out = page.out;
    const bool icmp = is_icmp(f.proto);
    std::string d;
    const LadderSighting* prev = nullptr;
    double px_prev = 0;
    double py_prev = 0;
    for (const LadderSighting& s : j.sightings) {
        const auto lane = lanes.of.find(s.point);
        if (lane == lanes.of.end()) {
            prev = nullptr;
            continue;
        }
        const double x = lanes.x(lane->second);
        const double yy = axis.y_of.at(s.ts_ns);
        d.append(prev ? " L" : (d.empty() ? "M" : " M")).append(px(x)).append(" ").append(px(yy));
        const std::vector<std::string> changes = prev ? changes_between(*prev, s, icmp) : std::vector<std::string>{};
        if (!changes.empty()) {
            out.append("<line class=\"halo\" x1=\"")
                .append(px(px_prev))
                .append("\" y1=\"")
                .append(px(py_prev))
                .append("\" x2=\"")
                .append(px(x))
                .append("\" y2=\"")
                .append(px(yy))
                .append("\"/>");
            std::string key = std::string(cls) + "|" + num(prev->point) + "|" + num(s.point);
            for (const auto& c : changes) key.append("|").append(c);
            if (labels.labelled.insert(key).second && labels.labelled.size() <= 24) {
                // Once per kind of change: one line per field, stacked above the middle of the segment.
                const std::size_t chars =
                    std::max<std::size_t>(12, static_cast<std::size_t>(std::abs(x - px_prev) / 6.4));
                for (std::size_t k = 0; k < changes.size(); ++k) {
                    const double ly = (py_prev + yy) / 2 - 7 - 13.0 * static_cast<double>(changes.size() - 1 - k);
                    labels.svg.append("<text class=\"rw\" x=\"")
                        .append(px((px_prev + x) / 2))
                        .append("\" y=\"")
                        .append(px(ly))
                        .append("\" text-anchor=\"middle\">")
                        .append(esc(changes[k], chars))
                        .append("</text>");
                }
            }
        }
        prev = &s;
        px_prev = x;
        py_prev = yy;
    }
    out.append("<path d=\"").append(d).append("\"/>");
}

// A journey that stopped where the model says packets of its direction were lost: a red ✕ at the next point.
void lost_mark(Page& page, const Flow& f, const LadderJourney& j, const Lanes& lanes, const TimeAxis& axis) {
    const LadderSighting& last = j.sightings.back();
    const Loss* loss = nullptr;  // the last of the flow's losses with this direction and point (as a map keeps it)
    for (const Loss& l : f.lost)
        if ((l.direction == FlowDirection::reply) == j.reply && l.after == page.point_name(last.point)) loss = &l;
    const auto from = lanes.of.find(last.point);
    if (loss == nullptr || from == lanes.of.end()) return;
    const auto to_idx = page.point_index.find(loss->expected);
    const auto to =
        to_idx == page.point_index.end() ? lanes.of.end() : lanes.of.find(page.model.points[to_idx->second].id);
    if (to == lanes.of.end()) return;
    const double x1 = lanes.x(from->second);
    const double y1 = axis.y_of.at(last.ts_ns);
    const double x2 = lanes.x(to->second);
    const double y2 = y1 + 16;
    page.out.append("<g class=\"lost\"><title>lost: seen at ")
        .append(page.e(page.point_name(last.point)))
        .append(", never at ")
        .append(page.e(loss->expected))
        .append("</title><path d=\"M")
        .append(px(x1))
        .append(" ")
        .append(px(y1))
        .append(" L")
        .append(px(x2))
        .append(" ")
        .append(px(y2))
        .append("\"/><line class=\"x\" x1=\"")
        .append(px(x2 - 5))
        .append("\" y1=\"")
        .append(px(y2 - 5))
        .append("\" x2=\"")
        .append(px(x2 + 5))
        .append("\" y2=\"")
        .append(px(y2 + 5))
        .append("\"/><line class=\"x\" x1=\"")
        .append(px(x2 + 5))
        .append("\" y1=\"")
        .append(px(y2 - 5))
        .append("\" x2=\"")
        .append(px(x2 - 5))
        .append("\" y2=\"")
        .append(px(y2 + 5))
        .append("\"/><text x=\"")
        .append(px(x2 + 9))
        .append("\" y=\"")
        .append(px(y2 + 4))
        .append("\">lost</text></g>");
}

void draw_journey(Page& page, const Flow& f, const LadderJourney& j, const Lanes& lanes, const TimeAxis& axis,
                  std::int64_t t0, Labels& labels) {
    std::string& out = page.out;
    const char* cls = j.icmp_error ? "err" : j.reply ? "rep" : "fwd";
    const LadderSighting& first = j.sightings.front();
    const LadderSighting& last = j.sightings.back();
    out.append("<g class=\"j ").append(cls).append("\"><title>");
    if (j.icmp_error) {
        out.append("ICMP error");
        if (j.error) {
            const IcmpError& err = page.model.icmp_errors[*j.error];
            out.append(" (")
                .append(icmp_name(err.icmp, err.type, err.code))
                .append(") from ")
                .append(page.e(err.reporter));
        }
    } else {
        out.append(j.reply ? "reply" : "forward");
    }
    out.append(" · journey ")
        .append(num(j.id))
        .append(" · ")
        .append(plural(static_cast<std::int64_t>(j.sightings.size()), "point", "points"))
        .append(" · ")
        .append(duration(last.ts_ns - first.ts_ns))
        .append(" from first to last\n")
        .append(page.e(describe(first)))
        .append("</title>");
    journey_path(page, f, j, cls, lanes, axis, labels);
    for (const LadderSighting& s : j.sightings) {
        const auto lane = lanes.of.find(s.point);
        if (lane == lanes.of.end()) continue;
        out.append("<circle cx=\"")
            .append(px(lanes.x(lane->second)))
            .append("\" cy=\"")
            .append(px(axis.y_of.at(s.ts_ns)))
            .append("\" r=\"3.2\"><title>")
            .append(page.e(page.point_name(s.point)))
            .append(" at +")
            .append(duration(s.ts_ns - t0))
            .append("\n")
            .append(page.e(describe(s)))
            .append("</title></circle>");
    }
    if (j.icmp_error) {
        if (const auto lane = lanes.of.find(first.point); lane != lanes.of.end())
            out.append("<text class=\"warn\" x=\"")
                .append(px(lanes.x(lane->second) + 7))
                .append("\" y=\"")
                .append(px(axis.y_of.at(first.ts_ns) - 4))
                .append("\">⚠</text>");
    } else {
        lost_mark(page, f, j, lanes, axis);
    }
    out.append("</g>\n");
}

}  // namespace

void ladder(Page& page, const Flow& f) {
    std::string& out = page.out;
    static const Ladder none;
    const auto it = page.samples.ladders.find(f.id);
    const Ladder& sample = it == page.samples.ladders.end() ? none : it->second;
    const std::vector<LadderJourney>& journeys = sample.journeys;
    if (journeys.empty()) {
        out.append("<p class=\"note\">No journey to draw.</p>\n");
        return;
    }
    const Lanes lanes = lanes_of(page, f, journeys);
    const TimeAxis axis = time_axis_of(journeys);
    const std::int64_t t0 = f.first_ts_ns != 0 ? f.first_ts_ns : axis.y_of.begin()->first;
    lane_heads(page, lanes);
    out.append("<div class=\"ladder-box\"><svg class=\"ladder\" role=\"img\" aria-label=\"ladder diagram of flow ")
        .append(num(f.id))
        .append("\" viewBox=\"0 0 ")
        .append(px(k_width))
        .append(" ")
        .append(px(axis.height))
        .append("\" width=\"")
        .append(px(k_width))
        .append("\" height=\"")
        .append(px(axis.height))
        .append("\">\n");
    for (const Gap& g : axis.gaps) {
        const double mid = (g.y0 + g.y1) / 2;
        out.append("<g class=\"gap\"><rect x=\"4\" y=\"")
            .append(px(g.y0 + 3))
            .append("\" width=\"")
            .append(px(k_width - 8))
            .append("\" height=\"")
            .append(px(std::max(2.0, g.y1 - g.y0 - 6)))
            .append("\" rx=\"3\"/><text x=\"")
            .append(px(k_gutter - 16))
            .append("\" y=\"")
            .append(px(mid + 3.5))
            .append("\" text-anchor=\"end\">⋯ ")
            .append(duration(g.ns))
            .append("</text></g>");
    }
    out.append("\n");
    for (std::size_t k = 0; k < lanes.points.size(); ++k)
        out.append("<line class=\"lane\" x1=\"")
            .append(px(lanes.x(k)))
            .append("\" y1=\"0\" x2=\"")
            .append(px(lanes.x(k)))
            .append("\" y2=\"")
            .append(px(axis.height))
            .append("\"/>");
    out.append("\n");
    Labels labels;
    double last_label_y = -100;
    for (const LadderJourney& j : journeys) {
        draw_journey(page, f, j, lanes, axis, t0, labels);
        const double ly = axis.y_of.at(j.sightings.front().ts_ns);
        if (ly - last_label_y >= 12) {
            out.append("<text class=\"tlabel ")
                .append(j.icmp_error ? "err"
                        : j.reply    ? "rep"
                                     : "fwd")
                .append("\" x=\"")
                .append(px(k_gutter - 16))
                .append("\" y=\"")
                .append(px(ly + 4))
                .append("\" text-anchor=\"end\">+")
                .append(duration(j.sightings.front().ts_ns - t0))
                .append("</text>");
            last_label_y = ly;
        }
    }
    out.append(labels.svg).append("\n</svg></div>\n<p class=\"note\">");
    if (journeys.size() >= sample.total) {
        out.append("All ")
            .append(plural(static_cast<std::int64_t>(sample.total), "journey", "journeys"))
            .append(" drawn");
    } else {
        out.append("Drawn: ")
            .append(num(static_cast<std::int64_t>(journeys.size())))
            .append(" of ")
            .append(plural(static_cast<std::int64_t>(sample.total), "journey", "journeys"))
            .append(" (evenly spread over the flow, plus lost ones and ICMP errors)");
    }
    out.append(
        ". Time runs down; each gap between two events is drawn on a log scale, and gaps of 1 ms or more "
        "are shortened (grey bands say how long they were). Hover a packet for its addresses.</p>\n");
}

}  // namespace hoptrace::report::html
