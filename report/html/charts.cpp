// Charts of hop latency: per drawn flow a box plot per hop (its hop statistics), and a histogram per hop of all
// flows together (hop_totals, over the model's histogram sample).

#include "report/html/parts.hpp"

#include "report/format.hpp"
#include "report/html/escape.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::report::html {

namespace {

// A box plot's geometry: one row per hop, its label on the left, the plot in the middle, p50 and p99 on the right.
namespace box {
constexpr double k_width = 1100;
constexpr double k_label_w = 300;
constexpr double k_plot_x = k_label_w + 10;
constexpr double k_plot_w = 520;
constexpr double k_row_h = 24;
constexpr double k_top = 22;
}  // namespace box

// The x of a hop time on a chart whose axis ends at max_axis (in time_axis units).
struct TimeScale {
    double left;
    double width;
    double max_axis;
    [[nodiscard]] double x(double ns) const { return left + width * time_axis(ns) / max_axis; }
};

// The opening <svg> of a chart of width x height.
void open_svg(std::string& out, const char* cls, double width, double height) {
    out.append("<svg class=\"")
        .append(cls)
        .append("\" viewBox=\"0 0 ")
        .append(px(width))
        .append(" ")
        .append(px(height))
        .append("\" width=\"")
        .append(px(width))
        .append("\" height=\"")
        .append(px(height))
        .append("\"><g class=\"axis\">");
}

// A vertical line at x from y1 to y2, of class `cls` unless it is empty.
void vertical_line(std::string& out, std::string_view cls, double x, double y1, double y2) {
    out.append("<line ");
    if (!cls.empty()) out.append("class=\"").append(cls).append("\" ");
    out.append("x1=\"")
        .append(px(x))
        .append("\" y1=\"")
        .append(px(y1))
        .append("\" x2=\"")
        .append(px(x))
        .append("\" y2=\"")
        .append(px(y2))
        .append("\"/>");
}

// A tick of a time axis: a line from y1 to y2 and its label at label_y.
void time_tick(std::string& out, const Tick& t, double x, double y1, double y2, double label_y) {
    vertical_line(out, "", x, y1, y2);
    out.append("<text x=\"")
        .append(px(x))
        .append("\" y=\"")
        .append(px(label_y))
        .append("\" text-anchor=\"middle\">")
        .append(t.label)
        .append("</text>");
}

double as_ns(std::int64_t ns) { return static_cast<double>(ns); }

// The hop's title (its statistics, shown on hover) and its label at the left of its row.
void box_label(Page& page, const HopStats& h, const char* cls, double yc) {
    page.out.append("<g><title>")
        .append(page.e(correlate::to_string(h.direction)))
        .append(" ")
        .append(page.e(h.from))
        .append(" → ")
        .append(page.e(h.to))
        .append(": n ")
        .append(num(h.count))
        .append(", min ")
        .append(duration(h.min_ns))
        .append(", p50 ")
        .append(duration(h.p50_ns))
        .append(", p90 ")
        .append(duration(h.p90_ns))
        .append(", p99 ")
        .append(duration(h.p99_ns))
        .append(", max ")
        .append(duration(h.max_ns))
        .append("</title><text class=\"rowlabel ")
        .append(cls)
        .append("\" x=\"8\" y=\"")
        .append(px(yc + 4))
        .append("\">")
        .append(std::string(cls) == "rep" ? "reply " : "forward ")
        .append(esc(h.from, 16))
        .append(" → ")
        .append(esc(h.to, 16))
        .append("</text>");
}

// One hop's row: whisker from min to max, box from p50 to p90, p99 diamond, and the numbers at the right.
void box_row(Page& page, const HopStats& h, std::size_t row, const TimeScale& scale) {
    std::string& out = page.out;
    const char* cls = h.direction == FlowDirection::reply ? "rep" : "fwd";
    const double yc = box::k_top + box::k_row_h * static_cast<double>(row) + box::k_row_h / 2;
    box_label(page, h, cls, yc);
    out.append("<line class=\"whisker ")
        .append(cls)
        .append("\" x1=\"")
        .append(px(scale.x(as_ns(h.min_ns))))
        .append("\" y1=\"")
        .append(px(yc))
        .append("\" x2=\"")
        .append(px(scale.x(as_ns(h.max_ns))))
        .append("\" y2=\"")
        .append(px(yc))
        .append("\"/>");
    const double b0 = scale.x(as_ns(h.p50_ns));
    const double b1 = std::max(scale.x(as_ns(h.p90_ns)), b0 + 1.5);
    out.append("<rect class=\"box ")
        .append(cls)
        .append("\" x=\"")
        .append(px(b0))
        .append("\" y=\"")
        .append(px(yc - 7))
        .append("\" width=\"")
        .append(px(b1 - b0))
        .append("\" height=\"14\" rx=\"2\"/>");
    vertical_line(out, "p50", b0, yc - 9, yc + 9);
    const double p99 = scale.x(as_ns(h.p99_ns));
    out.append("<path class=\"p99\" d=\"M")
        .append(px(p99))
        .append(" ")
        .append(px(yc - 5))
        .append(" l5 5 l-5 5 l-5 -5 z\"/>");
    out.append("<text class=\"stat\" x=\"")
        .append(px(box::k_plot_x + box::k_plot_w + 16))
        .append("\" y=\"")
        .append(px(yc + 4))
        .append("\">p50 ")
        .append(duration(h.p50_ns))
        .append(" · p99 ")
        .append(duration(h.p99_ns))
        .append(" · n ")
        .append(num(h.count))
        .append("</text></g>\n");
}

// A histogram's geometry.
namespace hist {
constexpr double k_width = 520;
constexpr double k_height = 170;
constexpr double k_left = 40;
constexpr double k_plot_w = k_width - k_left - 14;
constexpr double k_plot_top = 26;
constexpr double k_plot_h = 104;
constexpr double k_axis_y = k_plot_top + k_plot_h;
}  // namespace hist

// How many of `samples` fall in each of `bins` bins of the time axis up to max_axis.
std::vector<std::int64_t> bin_counts(const std::vector<std::int64_t>& samples, std::size_t bins, double max_axis) {
    std::vector<std::int64_t> count(bins, 0);
    for (std::int64_t v : samples) {
        auto b = static_cast<std::size_t>(time_axis(static_cast<double>(v)) / max_axis * static_cast<double>(bins));
        count[std::min(b, bins - 1)]++;
    }
    return count;
}

// The time axis with its ticks up to max_ns, and the count axis's top and 0.
void histogram_axes(std::string& out, const TimeScale& scale, double max_ns, std::int64_t top_count) {
    using namespace hist;
    out.append("<line x1=\"")
        .append(px(k_left))
        .append("\" y1=\"")
        .append(px(k_axis_y))
        .append("\" x2=\"")
        .append(px(k_left + k_plot_w))
        .append("\" y2=\"")
        .append(px(k_axis_y))
        .append("\"/>");
    for (const Tick& t : k_ticks) {
        if (t.ns > max_ns * 1.02) break;
        time_tick(out, t, scale.x(t.ns), k_axis_y, k_axis_y + 4, k_axis_y + 16);
    }
    out.append("<text x=\"")
        .append(px(k_left - 6))
        .append("\" y=\"")
        .append(px(k_plot_top + 8))
        .append("\" text-anchor=\"end\">")
        .append(num(top_count))
        .append("</text><text x=\"")
        .append(px(k_left - 6))
        .append("\" y=\"")
        .append(px(k_axis_y))
        .append("\" text-anchor=\"end\">0</text></g>");
}

void histogram_bars(std::string& out, const std::vector<std::int64_t>& count, std::int64_t top_count, const char* cls) {
    using namespace hist;
    const double bw = k_plot_w / static_cast<double>(count.size());
    for (std::size_t b = 0; b < count.size(); ++b) {
        if (count[b] == 0) continue;
        const double bh = std::max(1.5, k_plot_h * static_cast<double>(count[b]) / static_cast<double>(top_count));
        out.append("<rect class=\"bar ")
            .append(cls)
            .append("\" x=\"")
            .append(px(k_left + bw * static_cast<double>(b) + 0.5))
            .append("\" y=\"")
            .append(px(k_axis_y - bh))
            .append("\" width=\"")
            .append(px(std::max(1.0, bw - 1)))
            .append("\" height=\"")
            .append(px(bh))
            .append("\"><title>")
            .append(num(count[b]))
            .append("</title></rect>");
    }
}

// A percentile's label beside its line at x, on its left near the chart's right edge.
void percentile_label(std::string& out, const char* cls, const char* name, std::int64_t ns, double x, double y) {
    const bool on_left = x > hist::k_width - 140;
    out.append("<text class=\"")
        .append(cls)
        .append("\" x=\"")
        .append(px(x + (on_left ? -4 : 4)))
        .append("\" y=\"")
        .append(px(y))
        .append("\" text-anchor=\"")
        .append(on_left ? "end" : "start")
        .append("\">")
        .append(name)
        .append(" ")
        .append(duration(ns))
        .append("</text>");
}

// The p50 and p99 lines with their labels (p99's lower down when the two would overlap).
void histogram_percentiles(std::string& out, const HopStats& hop, const TimeScale& scale) {
    using namespace hist;
    const double p50 = scale.x(as_ns(hop.p50_ns));
    const double p99 = scale.x(as_ns(hop.p99_ns));
    const bool close = std::abs(p99 - p50) < 70;
    vertical_line(out, "pline p50l", p50, k_plot_top - 4, k_axis_y);
    vertical_line(out, "pline p99l", p99, k_plot_top - 4, k_axis_y);
    percentile_label(out, "plabel", "p50", hop.p50_ns, p50, k_plot_top - 8);
    percentile_label(out, "plabel p99t", "p99", hop.p99_ns, p99, close ? k_plot_top + 10 : k_plot_top - 8);
}

// One hop's histogram over `samples` (its sampled hop times), with its heading and a note of its numbers.
void histogram(Page& page, const HopStats& hop, const std::vector<std::int64_t>& samples) {
    using namespace hist;
    std::string& out = page.out;
    const std::size_t bins = std::clamp<std::size_t>(page.opt.histogram_bins, 1, 400);
    const char* cls = hop.direction == FlowDirection::reply ? "rep" : "fwd";
    const double max_ns = std::max(1000.0, as_ns(hop.max_ns));
    const TimeScale scale{k_left, k_plot_w, time_axis(max_ns) * 1.02};
    const std::vector<std::int64_t> count = bin_counts(samples, bins, scale.max_axis);
    const std::int64_t top_count = std::max<std::int64_t>(1, *std::max_element(count.begin(), count.end()));
    out.append("<div><h4>")
        .append(hop.direction == FlowDirection::reply ? "reply · " : "forward · ")
        .append(page.e(hop.from))
        .append(" → ")
        .append(page.e(hop.to))
        .append("</h4>");
    open_svg(out, "hist", k_width, k_height);
    histogram_axes(out, scale, max_ns, top_count);
    histogram_bars(out, count, top_count, cls);
    histogram_percentiles(out, hop, scale);
    out.append("</svg><p class=\"note\">n ")
        .append(num(hop.count))
        .append(" · min ")
        .append(duration(hop.min_ns))
        .append(" · max ")
        .append(duration(hop.max_ns));
    if (static_cast<std::int64_t>(samples.size()) < hop.count)
        out.append(" · histogram of ").append(num(static_cast<std::int64_t>(samples.size()))).append(" sampled");
    out.append("</p></div>\n");
}

}  // namespace

void box_plots(Page& page, const Flow& f) {
    using namespace box;
    std::string& out = page.out;
    const std::vector<HopStats>& hops = f.hops;
    if (hops.empty()) return;
    const std::size_t rows = std::min<std::size_t>(hops.size(), 2 * std::max<std::size_t>(page.opt.max_lanes, 1));
    double max_ns = 1000;
    for (std::size_t i = 0; i < rows; ++i) max_ns = std::max(max_ns, as_ns(hops[i].max_ns));
    const TimeScale scale{k_plot_x, k_plot_w, time_axis(max_ns) * 1.04};
    const double height = k_top + k_row_h * static_cast<double>(rows) + 10;
    out.append("<h4>Hop latency</h4>");
    open_svg(out, "boxplot", k_width, height);
    for (const Tick& t : k_ticks) {
        if (t.ns > max_ns * 1.04) break;
        time_tick(out, t, scale.x(t.ns), k_top - 4, height - 8, k_top - 8);
    }
    out.append("</g>\n");
    for (std::size_t i = 0; i < rows; ++i) {
        box_row(page, hops[i], i, scale);
    }
    out.append(
        "</svg>\n<p class=\"note\">Line: min to max; box: p50 (black tick) to p90; red diamond: p99. "
        "Percentiles are nearest-rank over all the flow's journeys.");
    if (rows < hops.size())
        out.append(" ")
            .append(num(static_cast<std::int64_t>(hops.size() - rows)))
            .append(" more hops in the JSON report.");
    out.append("</p>\n");
}

void histograms(Page& page) {
    const HtmlSamples& hs = page.samples;
    const std::vector<HopStats>& totals = page.model.hop_totals;
    if (totals.empty()) return;
    std::string& out = page.out;
    const std::size_t shown = hs.histogram.size();
    out.append("<section id=\"hops\"><h2>Hop latency, ")
        .append(hs.subset ? "the flows shown" : "all flows")
        .append("</h2>\n<div class=\"hists\">\n");
    for (std::size_t i = 0; i < shown; ++i) {
        histogram(page, totals[i], hs.histogram[i]);
    }
    out.append(
        "</div>\n<p class=\"note\">Time axis: log-like (0 ns is on it: taps in one pass through the kernel "
        "share a timestamp). p50 and p99 are the exact nearest-rank percentiles of all journeys");
    if (hs.histogram_step > 1)
        out.append("; the bars count every ")
            .append(num(hs.histogram_step))
            .append("th journey (")
            .append(num(hs.histogram_sampled))
            .append(" hop times)");
    out.append(".");
    if (shown < totals.size())
        out.append(" ")
            .append(num(static_cast<std::int64_t>(totals.size() - shown)))
            .append(" more hops are in the JSON report.");
    out.append("</p>\n</section>\n");
}

}  // namespace hoptrace::report::html
