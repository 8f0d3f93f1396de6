// The path diagram: every point on some flow's path, in columns (the longest chain of hops before it), edges
// between consecutive points of the flows' paths; NAT, losses and ICMP errors tagged where they happen.

#include "report/html/parts.hpp"

#include "report/html/escape.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace hoptrace::report::html {
namespace {

constexpr double k_node_w = 178;
constexpr double k_node_h = 104;
constexpr double k_row_gap = 26;
constexpr double k_top = 18;
constexpr std::size_t k_off_per_row = 6;

struct Edge {
    std::map<std::string, std::set<std::pair<std::string, std::string>>> nat[2];  // [forward, reply] field -> from, to
    std::int64_t lost[2] = {0, 0};
    std::set<std::string> dropped_by[2];  // --trace-rules: the chains whose rules dropped them
    std::int64_t flows = 0;
};

// What the flows say about the points: which are on a path, the edges between them, the addresses seen there.
struct Graph {
    std::vector<bool> on_path;
    std::map<std::pair<std::size_t, std::size_t>, Edge> edges;  // (lower index, higher index)
    std::vector<std::set<std::string>> addresses;
    std::vector<const char*> address_role;
    std::vector<std::pair<std::size_t, const Flow*>> ends_outside;  // flows that leave by their path's last point
    std::map<std::size_t, std::int64_t> errors_at;                  // ICMP errors by the point that saw each first
};

struct Layout {
    std::vector<std::size_t> column;
    std::size_t columns = 0;
    std::vector<double> col_x;
    std::vector<double> node_y;
    double height_rows = 0;
    std::vector<std::size_t> off_path;
    double off_top = 0;
    double width = 0;
    double height = 0;
    std::set<std::size_t> sinks_with_remote;
    std::set<std::string> remote_addresses;
    [[nodiscard]] bool remote() const { return !sinks_with_remote.empty(); }
    [[nodiscard]] double mid_y(std::size_t i) const { return node_y[i] + k_node_h / 2; }
};

std::optional<std::size_t> index_of(const Page& page, const std::string& name) {
    const auto it = page.point_index.find(name);
    if (it == page.point_index.end() || it->second >= page.opt.max_diagram_points) return std::nullopt;
    return it->second;
}

void add_edge(Graph& g, std::size_t a, std::size_t b) {
    const auto key = std::minmax(a, b);
    ++g.edges[{key.first, key.second}].flows;
}

// A flow between two containers on one bridge (its forward packets observed by the bridge that switched them
// between two ports) is drawn as both containers' own paths to that bridge: the columns still run from the
// containers outward, and each container shows its own address.
bool draw_as_bridge_legs(const Page& page, Graph& g, const Flow& f, const std::vector<std::size_t>& idx) {
    const std::size_t n = page.model.points.size();
    for (const Observer& o : f.observers) {
        if (o.direction != FlowDirection::forward || o.between.size() != 2) continue;
        const auto bridge = index_of(page, o.point);
        const auto egress_point = index_of(page, o.between[1]);
        const auto egress = std::find(idx.begin(), idx.end(), egress_point.value_or(n));
        if (!bridge || egress == idx.begin() || egress == idx.end()) continue;
        g.on_path[*bridge] = true;
        std::vector<std::size_t> outward(idx.begin(), egress);
        std::vector<std::size_t> inward(idx.rbegin(), std::make_reverse_iterator(egress));
        for (const auto& [leg, address] : {std::pair{&outward, &f.original.src}, std::pair{&inward, &f.original.dst}}) {
            leg->push_back(*bridge);
            for (std::size_t k = 0; k < leg->size(); ++k) {
                if (!address->empty() && g.addresses[(*leg)[k]].size() < 6) g.addresses[(*leg)[k]].insert(*address);
                if (k + 1 == leg->size()) break;
                add_edge(g, (*leg)[k], (*leg)[k + 1]);
            }
        }
        return true;
    }
    return false;
}

// One flow's points, edges, addresses (the inner end of the tuple, the source when the flow starts inside, with
// the forward rewrites applied where they happened), rewrites and losses.
void add_flow(const Page& page, Graph& g, const Flow& f) {
    std::vector<std::size_t> idx;
    for (const std::string& name : f.path)
        if (auto i = index_of(page, name)) idx.push_back(*i);
    if (idx.empty()) return;
    for (std::size_t i : idx) g.on_path[i] = true;
    if (draw_as_bridge_legs(page, g, f, idx)) return;
    const bool starts_inside = idx.front() <= idx.back();
    const char* side = starts_inside ? "src" : "dst";
    std::string address = starts_inside ? f.original.src : f.original.dst;
    for (std::size_t k = 0; k < idx.size(); ++k) {
        if (!address.empty() && g.addresses[idx[k]].size() < 6) g.addresses[idx[k]].insert(address);
        g.address_role[idx[k]] = side;
        if (k + 1 == idx.size()) break;
        for (const Rewrite& r : f.rewrites) {
            if (r.direction != FlowDirection::forward) continue;
            if (index_of(page, r.from_point) != idx[k] || index_of(page, r.to_point) != idx[k + 1]) continue;
            if (r.field == side) address = r.to;
        }
    }
    for (std::size_t k = 0; k + 1 < idx.size(); ++k) add_edge(g, idx[k], idx[k + 1]);
    if (starts_inside && page.model.points[idx.back()].role != Role::container)
        g.ends_outside.emplace_back(idx.back(), &f);
    for (const Rewrite& r : f.rewrites) {
        const auto a = index_of(page, r.from_point);
        const auto b = index_of(page, r.to_point);
        if (!a || !b) continue;
        const auto key = std::minmax(*a, *b);
        const int d = r.direction == FlowDirection::reply ? 1 : 0;
        auto& pairs = g.edges[{key.first, key.second}].nat[d][r.field];
        if (pairs.size() < 64) pairs.emplace(r.from, r.to);
    }
    for (const Loss& l : f.lost) {
        const auto a = index_of(page, l.after);
        const auto b = index_of(page, l.expected);
        if (!a || !b) continue;
        const auto key = std::minmax(*a, *b);
        Edge& edge = g.edges[{key.first, key.second}];
        const int d = l.direction == FlowDirection::reply ? 1 : 0;
        edge.lost[d] += l.count;
        for (const FirewallRule& r : l.rules)
            if (edge.dropped_by[d].size() < 4) edge.dropped_by[d].insert(r.table + " " + r.chain);
    }
}

Graph collect(const Page& page) {
    const std::size_t n = page.model.points.size();
    Graph g;
    g.on_path.assign(n, false);
    g.addresses.resize(n);
    g.address_role.assign(n, "src");
    for (const Flow& f : page.model.flows) add_flow(page, g, f);
    for (const IcmpError& err : page.model.icmp_errors) {
        if (err.path.empty()) continue;
        if (auto i = index_of(page, err.path[0])) ++g.errors_at[*i];
    }
    return g;
}

// Columns: the longest chain of edges before each point; rows: in each column, points ordered by the mean row of
// their predecessors (fewer crossings), then path order; each column centred vertically.
Layout lay_out(const Page& page, const Graph& g) {
    const std::size_t n = page.model.points.size();
    Layout l;
    l.column.assign(n, 0);
    // Edges are visited in key order (by lower index), which is a topological order; more passes settle chains
    // whose lower ends were raised after they were visited.
    for (int pass = 0; pass < 3; ++pass)
        for (const auto& [key, edge] : g.edges)
            l.column[key.second] = std::max(l.column[key.second], l.column[key.first] + 1);
    for (std::size_t i = 0; i < n; ++i)
        if (g.on_path[i]) l.columns = std::max(l.columns, l.column[i] + 1);
    // "Beyond": where flows go after the outermost column (their destinations after NAT).
    for (const auto& [last, f] : g.ends_outside) {
        if (l.column[last] + 1 != l.columns) continue;
        l.sinks_with_remote.insert(last);
        if (!f->translated.dst.empty() && l.remote_addresses.size() < 5) l.remote_addresses.insert(f->translated.dst);
    }
    // Wide gaps where an edge carries tags.
    std::vector<double> gap_after(l.columns + 1, 64);
    for (const auto& [key, edge] : g.edges)
        if (!edge.nat[0].empty() || !edge.nat[1].empty() || edge.lost[0] || edge.lost[1])
            gap_after[l.column[key.first]] = 196;
    if (l.remote() && l.columns > 0) gap_after[l.columns - 1] = std::max(gap_after[l.columns - 1], 80.0);
    l.col_x.assign(l.columns + 1, 16);
    for (std::size_t c = 1; c <= l.columns; ++c) l.col_x[c] = l.col_x[c - 1] + k_node_w + gap_after[c - 1];

    std::vector<std::vector<std::size_t>> by_col(l.columns);
    std::vector<double> row(n, 0);
    for (std::size_t c = 0; c < l.columns; ++c) {
        std::vector<std::pair<double, std::size_t>> members;
        for (std::size_t i = 0; i < n; ++i) {
            if (!g.on_path[i] || l.column[i] != c) continue;
            double sum = 0;
            int count = 0;
            for (const auto& [key, edge] : g.edges)
                if (key.second == i && l.column[key.first] < c) {
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
    l.height_rows = static_cast<double>(max_rows) * (k_node_h + k_row_gap);
    l.node_y.assign(n, 0);
    for (std::size_t c = 0; c < l.columns; ++c) {
        const double h = static_cast<double>(by_col[c].size()) * (k_node_h + k_row_gap);
        for (std::size_t k = 0; k < by_col[c].size(); ++k)
            l.node_y[by_col[c][k]] = k_top + (l.height_rows - h) / 2 + static_cast<double>(k) * (k_node_h + k_row_gap);
    }
    for (std::size_t i = 0; i < n && i < page.opt.max_diagram_points; ++i)
        if (!g.on_path[i]) l.off_path.push_back(i);
    const double off_rows = l.off_path.empty() ? 0 : std::ceil(static_cast<double>(l.off_path.size()) / k_off_per_row);
    l.off_top = k_top + l.height_rows + (l.off_path.empty() ? 0 : 30);
    l.width = l.col_x[l.columns] + (l.remote() ? 150 : 0) + 16;
    l.width = std::max(l.width, 16 + static_cast<double>(std::min(l.off_path.size(), k_off_per_row)) * (k_node_w + 20));
    l.width = std::max(l.width, 400.0);
    l.height = l.off_top + off_rows * (k_node_h - 22 + 16) + 24;
    return l;
}

void arrow(std::string& out, double x, double y, const char* cls) {
    out.append("<path class=\"")
        .append(cls)
        .append("\" d=\"M")
        .append(px(x))
        .append(" ")
        .append(px(y))
        .append(" l-9 -5 v10 z\"/>");
}

void curve(std::string& out, double x1, double y1, double x2, double y2) {
    const double mx = (x1 + x2) / 2;
    out.append(" d=\"M")
        .append(px(x1))
        .append(" ")
        .append(px(y1))
        .append(" C")
        .append(px(mx))
        .append(" ")
        .append(px(y1))
        .append(" ")
        .append(px(mx))
        .append(" ")
        .append(px(y2))
        .append(" ")
        .append(px(x2 - 8))
        .append(" ")
        .append(px(y2))
        .append("\"");
}

void draw_edges(Page& page, const Graph& g, const Layout& l) {
    std::string& out = page.out;
    const auto& points = page.model.points;
    for (const auto& [key, edge] : g.edges) {
        const double x2 = l.col_x[l.column[key.second]];
        const double y2 = l.mid_y(key.second);
        out.append("<path class=\"edge\" style=\"stroke-width:")
            .append(px(1.4 + std::min(3.0, std::log2(static_cast<double>(std::max<std::int64_t>(edge.flows, 1))))))
            .append("\"");
        curve(out, l.col_x[l.column[key.first]] + k_node_w, l.mid_y(key.first), x2, y2);
        out.append("><title>")
            .append(page.e(points[key.first].name))
            .append(" → ")
            .append(page.e(points[key.second].name))
            .append(": ")
            .append(plural(edge.flows, "flow", "flows"))
            .append("</title></path>");
        arrow(out, x2, y2, "arrow");
        out.append("\n");
    }
    if (!l.remote()) return;
    const double remote_x = l.col_x[l.columns] + 10;
    const double remote_h = 40 + 16.0 * static_cast<double>(l.remote_addresses.size());
    const double remote_y = k_top + (l.height_rows - remote_h) / 2;
    for (std::size_t i : l.sinks_with_remote) {
        const double y2 = remote_y + remote_h / 2;
        out.append("<path class=\"edge remote\"");
        curve(out, l.col_x[l.column[i]] + k_node_w, l.mid_y(i), remote_x, y2);
        out.append("/>");
        arrow(out, remote_x, y2, "arrow");
    }
    out.append("\n");
}

const char* role_heading(Role role) {
    switch (role) {
        case Role::container:
            return "CONTAINER";
        case Role::veth:
            return "HOST VETH";
        case Role::bridge:
            return "BRIDGE";
        case Role::uplink:
            return "UPLINK";
        case Role::other:
            break;
    }
    return "POINT";
}

// As many addresses as fit the box (about 20 characters), then "+N".
std::string addresses_text(const std::set<std::string>& addresses) {
    std::string addr;
    std::size_t k = 0;
    for (const std::string& a : addresses) {
        const std::size_t more = addresses.size() - k;
        if (k > 0 && addr.size() + 2 + a.size() + (more > 1 ? 3 : 0) > 20) {
            addr.append(" +").append(num(static_cast<std::int64_t>(more)));
            break;
        }
        addr.append(addr.empty() ? "" : ", ").append(a);
        ++k;
    }
    return addr;
}

void draw_node(Page& page, const Graph& g, std::size_t i, double x, double y, bool off) {
    std::string& out = page.out;
    const Point& p = page.model.points[i];
    const std::string role_text = hoptrace::to_string(p.role);
    const std::string role = p.role == Role::other ? std::string("point") : role_text;
    const double h = off ? k_node_h - 22 : k_node_h;
    out.append("<g class=\"node ")
        .append(role)
        .append(off ? " offpath" : "")
        .append("\"><title>")
        .append(page.e(p.name))
        .append(" (")
        .append(page.e(role_text))
        .append(")");
    if (!p.netns.empty() || !p.ifname.empty())
        out.append("\nnetns ")
            .append(page.e(p.netns.empty() ? "-" : p.netns))
            .append(", interface ")
            .append(page.e(p.ifname.empty() ? "-" : p.ifname));
    if (!p.source.empty() && p.source != "live") out.append("\nfrom ").append(page.e(p.source));
    if (!p.note.empty()) out.append("\n").append(page.e(p.note));
    out.append("</title><rect class=\"box\" x=\"")
        .append(px(x))
        .append("\" y=\"")
        .append(px(y))
        .append("\" width=\"")
        .append(px(k_node_w))
        .append("\" height=\"")
        .append(px(h))
        .append("\" rx=\"8\"/>");
    const std::string tx = px(x + 12);
    out.append("<text class=\"role\" x=\"")
        .append(tx)
        .append("\" y=\"")
        .append(px(y + 17))
        .append("\">")
        .append(off ? "NOT ON A PATH" : role_heading(p.role))
        .append("</text>");
    out.append("<text class=\"name\" x=\"")
        .append(tx)
        .append("\" y=\"")
        .append(px(y + 36))
        .append("\">")
        .append(esc(p.name, 20))
        .append("</text>");
    std::string sub;
    if (!p.netns.empty() || !p.ifname.empty()) {
        sub = p.netns.empty() ? p.ifname : p.netns + (p.ifname.empty() ? "" : " · " + p.ifname);
    } else if (!p.source.empty()) {
        const auto slash = p.source.find_last_of('/');
        sub = slash == std::string::npos ? p.source : p.source.substr(slash + 1);
    }
    out.append("<text class=\"sub\" x=\"")
        .append(tx)
        .append("\" y=\"")
        .append(px(y + 53))
        .append("\">")
        .append(esc(sub, 26))
        .append("</text>");
    double line_y = y + 71;
    if (!off) {
        const std::string addr = addresses_text(g.addresses[i]);
        out.append("<text class=\"addr\" x=\"").append(tx).append("\" y=\"").append(px(line_y)).append("\">");
        if (!addr.empty())
            out.append("<tspan class=\"sub\">").append(g.address_role[i]).append(" </tspan>").append(esc(addr, 24));
        out.append("</text>");
        line_y += 18;
    }
    out.append("<text class=\"sub\" x=\"")
        .append(tx)
        .append("\" y=\"")
        .append(px(line_y))
        .append("\">")
        .append(plural(p.packets, "packet", "packets"));
    if (p.kernel_drops > 0)
        out.append(", <tspan class=\"drops\">").append(num(p.kernel_drops)).append(" dropped by the kernel</tspan>");
    out.append("</text></g>\n");
}

void draw_nodes(Page& page, const Graph& g, const Layout& l) {
    std::string& out = page.out;
    for (std::size_t i = 0; i < g.on_path.size(); ++i)
        if (g.on_path[i]) draw_node(page, g, i, l.col_x[l.column[i]], l.node_y[i], false);
    if (l.remote()) {
        const double remote_x = l.col_x[l.columns] + 10;
        const double remote_h = 40 + 16.0 * static_cast<double>(l.remote_addresses.size());
        const double remote_y = k_top + (l.height_rows - remote_h) / 2;
        out.append("<g class=\"node remote\"><rect class=\"box\" x=\"")
            .append(px(remote_x))
            .append("\" y=\"")
            .append(px(remote_y))
            .append("\" width=\"140\" height=\"")
            .append(px(remote_h))
            .append("\" rx=\"8\"/><text class=\"role\" x=\"")
            .append(px(remote_x + 12))
            .append("\" y=\"")
            .append(px(remote_y + 18))
            .append("\">BEYOND</text>");
        double y = remote_y + 36;
        for (const std::string& a : l.remote_addresses) {
            out.append("<text class=\"addr\" x=\"")
                .append(px(remote_x + 12))
                .append("\" y=\"")
                .append(px(y))
                .append("\">")
                .append(esc(a, 17))
                .append("</text>");
            y += 16;
        }
        out.append("</g>\n");
    }
    for (std::size_t k = 0; k < l.off_path.size(); ++k) {
        const double x = 16 + static_cast<double>(k % k_off_per_row) * (k_node_w + 20);
        const double y = l.off_top + std::floor(static_cast<double>(k) / k_off_per_row) * (k_node_h - 22 + 16);
        draw_node(page, g, l.off_path[k], x, y, true);
    }
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

// A tag: a rounded box of lines centred at cx, its top at y; returns its height.
double tag(std::string& out, double cx, double y, const char* cls, const std::vector<std::string>& lines,
           const std::string& title) {
    std::size_t longest = 0;
    for (const auto& line : lines) {
        std::size_t w = 0;
        for (unsigned char c : line) w += (c & 0xC0) != 0x80;
        longest = std::max(longest, w);
    }
    const double w = std::min(188.0, 16 + 6.6 * static_cast<double>(longest));
    const double h = 8 + 15.0 * static_cast<double>(lines.size());
    out.append("<g class=\"tag ")
        .append(cls)
        .append("\"><title>")
        .append(title)
        .append("</title><rect x=\"")
        .append(px(cx - w / 2))
        .append("\" y=\"")
        .append(px(y))
        .append("\" width=\"")
        .append(px(w))
        .append("\" height=\"")
        .append(px(h))
        .append("\" rx=\"6\"/>");
    for (std::size_t k = 0; k < lines.size(); ++k) {
        out.append("<text")
            .append(k == 0 ? " class=\"h\"" : "")
            .append(" x=\"")
            .append(px(cx))
            .append("\" y=\"")
            .append(px(y + 16 + 15.0 * static_cast<double>(k)))
            .append("\" text-anchor=\"middle\">")
            .append(lines[k])
            .append("</text>");
    }
    out.append("</g>\n");
    return h;
}

// Tags on edges: NAT (amber: the forward tag above the edge, the reply tag below it), losses (red); ICMP errors
// under the point that first saw them.
void draw_tags(Page& page, const Graph& g, const Layout& l) {
    std::string& out = page.out;
    const auto& points = page.model.points;
    for (const auto& [key, edge] : g.edges) {
        const double cx = (l.col_x[l.column[key.first]] + k_node_w + l.col_x[l.column[key.second]]) / 2;
        const double mid = (l.mid_y(key.first) + l.mid_y(key.second)) / 2;
        double y = mid + 8;
        const std::string between = page.e(points[key.first].name) + " and " + page.e(points[key.second].name);
        for (int d = 0; d < 2; ++d) {
            if (edge.nat[d].empty()) continue;
            const bool masquerade = d == 0 && page.model.capture.masquerade && edge.nat[0].contains("src") &&
                                    points[key.second].role == Role::uplink;
            std::vector<std::string> lines{masquerade ? "MASQUERADE (forward)"
                                           : d == 0   ? "NAT (forward)"
                                                      : "NAT (reply)"};
            for (const char* field : {"src", "dst", "sport", "dport", "id"}) {
                const auto it = edge.nat[d].find(field);
                if (it == edge.nat[d].end()) continue;
                if (lines.size() == 4) {
                    lines.back() = "…";
                    break;
                }
                lines.push_back(esc(rewrite_summary(field, it->second), 28));
            }
            if (d == 0)
                tag(out, cx, mid - (8 + 15.0 * static_cast<double>(lines.size())) - 8, "nat", lines,
                    "rewritten between " + between);
            else y += tag(out, cx, y, "nat", lines, "rewritten between " + between) + 6;
        }
        for (int d = 0; d < 2; ++d) {
            if (edge.lost[d] == 0) continue;
            std::vector<std::string> lines{"✕ " + num(edge.lost[d]) + (d == 0 ? " forward" : " reply") + " lost"};
            for (const std::string& chain : edge.dropped_by[d]) lines.push_back(esc("by " + chain, 28));
            y += tag(out, cx, y, "loss", lines,
                     plural(edge.lost[d], "packet", "packets") + " seen at one of " + between +
                         " and never at the other" +
                         (edge.dropped_by[d].empty() ? "" : " (dropped by the firewall: --trace-rules)")) +
                 6;
        }
    }
    for (const auto& [i, count] : g.errors_at) {
        if (!g.on_path[i]) continue;
        tag(out, l.col_x[l.column[i]] + k_node_w / 2, l.node_y[i] + k_node_h + 4, "err",
            {"⚠ " + plural(count, "ICMP error", "ICMP errors")}, "ICMP errors first seen at " + page.e(points[i].name));
    }
}

}  // namespace

void path_diagram(Page& page) {
    const Graph g = collect(page);
    const Layout l = lay_out(page, g);
    std::string& out = page.out;
    out.append("<section id=\"path\"><h2>The path</h2>\n");
    if (l.columns == 0) out.append("<p class=\"note\">No journey crossed two points: there is no path to draw.</p>\n");
    out.append("<svg class=\"pathdiagram\" role=\"img\" aria-label=\"path diagram\" viewBox=\"0 0 ")
        .append(px(l.width))
        .append(" ")
        .append(px(l.height))
        .append("\" width=\"")
        .append(px(l.width))
        .append("\" height=\"")
        .append(px(l.height))
        .append("\">\n");
    draw_edges(page, g, l);  // edges first, tags last (on top)
    draw_nodes(page, g, l);
    draw_tags(page, g, l);
    out.append("</svg>\n");
    if (!l.off_path.empty())
        out.append("<p class=\"note\">Points below the line saw no packet that another point saw too.</p>\n");
    if (page.model.points.size() > page.opt.max_diagram_points)
        out.append("<p class=\"note\">The diagram shows the first ")
            .append(num(static_cast<std::int64_t>(page.opt.max_diagram_points)))
            .append(" points in path order; the table at the end lists them all.</p>\n");
    out.append(
        "<p class=\"note\">Columns follow the flows' paths from where they start; the addresses are the "
        "flows' own at each point (after NAT where it happened).</p>\n</section>\n");
}

}  // namespace hoptrace::report::html
