// Charts of hop latency: per drawn flow a box plot per hop (its hop statistics), and a histogram per hop of all
// flows together (hop_totals, over the model's histogram sample).

#include "report/html/parts.hpp"

#include "report/format.hpp"
#include "report/html/escape.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace hoptrace::report::html {

void box_plots(Page& page, const Flow& f) {
    std::string& out = page.out;
    const std::vector<HopStats>& hops = f.hops;
    if (hops.empty()) return;
    const std::size_t rows = std::min<std::size_t>(hops.size(), 2 * std::max<std::size_t>(page.opt.max_lanes, 1));
    constexpr double width = 1100;
    constexpr double label_w = 300;
    constexpr double plot_x = label_w + 10;
    constexpr double plot_w = 520;
    constexpr double row_h = 24;
    constexpr double top = 22;
    double max_ns = 1000;
    for (std::size_t i = 0; i < rows; ++i) max_ns = std::max(max_ns, static_cast<double>(hops[i].max_ns));
    const double max_axis = time_axis(max_ns) * 1.04;
    auto x_of = [&](double ns) { return plot_x + plot_w * time_axis(ns) / max_axis; };
    const double height = top + row_h * static_cast<double>(rows) + 10;
    out.append("<h4>Hop latency</h4><svg class=\"boxplot\" viewBox=\"0 0 ")
        .append(px(width))
        .append(" ")
        .append(px(height))
        .append("\" width=\"")
        .append(px(width))
        .append("\" height=\"")
        .append(px(height))
        .append("\"><g class=\"axis\">");
    for (const Tick& t : k_ticks) {
        if (t.ns > max_ns * 1.04) break;
        const double x = x_of(t.ns);
        out.append("<line x1=\"")
            .append(px(x))
            .append("\" y1=\"")
            .append(px(top - 4))
            .append("\" x2=\"")
            .append(px(x))
            .append("\" y2=\"")
            .append(px(height - 8))
            .append("\"/><text x=\"")
            .append(px(x))
            .append("\" y=\"")
            .append(px(top - 8))
            .append("\" text-anchor=\"middle\">")
            .append(t.label)
            .append("</text>");
    }
    out.append("</g>\n");
    for (std::size_t i = 0; i < rows; ++i) {
        const HopStats& h = hops[i];
        const char* cls = h.direction == FlowDirection::reply ? "rep" : "fwd";
        const double yc = top + row_h * static_cast<double>(i) + row_h / 2;
        const auto v = [](std::int64_t ns) { return static_cast<double>(ns); };
        out.append("<g><title>")
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
        out.append("<line class=\"whisker ")
            .append(cls)
            .append("\" x1=\"")
            .append(px(x_of(v(h.min_ns))))
            .append("\" y1=\"")
            .append(px(yc))
            .append("\" x2=\"")
            .append(px(x_of(v(h.max_ns))))
            .append("\" y2=\"")
            .append(px(yc))
            .append("\"/>");
        const double b0 = x_of(v(h.p50_ns));
        const double b1 = std::max(x_of(v(h.p90_ns)), b0 + 1.5);
        out.append("<rect class=\"box ")
            .append(cls)
            .append("\" x=\"")
            .append(px(b0))
            .append("\" y=\"")
            .append(px(yc - 7))
            .append("\" width=\"")
            .append(px(b1 - b0))
            .append("\" height=\"14\" rx=\"2\"/>");
        out.append("<line class=\"p50\" x1=\"")
            .append(px(b0))
            .append("\" y1=\"")
            .append(px(yc - 9))
            .append("\" x2=\"")
            .append(px(b0))
            .append("\" y2=\"")
            .append(px(yc + 9))
            .append("\"/>");
        const double p99 = x_of(v(h.p99_ns));
        out.append("<path class=\"p99\" d=\"M")
            .append(px(p99))
            .append(" ")
            .append(px(yc - 5))
            .append(" l5 5 l-5 5 l-5 -5 z\"/>");
        out.append("<text class=\"stat\" x=\"")
            .append(px(plot_x + plot_w + 16))
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
    std::string& out = page.out;
    const HtmlSamples& hs = page.samples;
    const std::vector<HopStats>& totals = page.model.hop_totals;
    if (totals.empty()) return;
    const std::size_t shown = hs.histogram.size();
    const bool subset = hs.subset;
    const std::int64_t step = hs.histogram_step;
    const std::int64_t sampled = hs.histogram_sampled;
    const auto& samples = hs.histogram;

    out.append("<section id=\"hops\"><h2>Hop latency, ")
        .append(subset ? "the flows shown" : "all flows")
        .append("</h2>\n<div class=\"hists\">\n");
    const std::size_t bins = std::clamp<std::size_t>(page.opt.histogram_bins, 1, 400);
    constexpr double w = 520;
    constexpr double h = 170;
    constexpr double left = 40;
    constexpr double plot_w = w - left - 14;
    constexpr double plot_top = 26;
    constexpr double plot_h = 104;
    for (std::size_t i = 0; i < shown; ++i) {
        const HopStats& hop = totals[i];
        const char* cls = hop.direction == FlowDirection::reply ? "rep" : "fwd";
        const double max_ns = std::max(1000.0, static_cast<double>(hop.max_ns));
        const double max_axis = time_axis(max_ns) * 1.02;
        auto x_of = [&](double ns) { return left + plot_w * time_axis(ns) / max_axis; };
        std::vector<std::int64_t> count(bins, 0);
        for (std::int64_t v : samples[i]) {
            auto b = static_cast<std::size_t>(time_axis(static_cast<double>(v)) / max_axis * static_cast<double>(bins));
            count[std::min(b, bins - 1)]++;
        }
        const std::int64_t top_count = std::max<std::int64_t>(1, *std::max_element(count.begin(), count.end()));
        out.append("<div><h4>")
            .append(hop.direction == FlowDirection::reply ? "reply · " : "forward · ")
            .append(page.e(hop.from))
            .append(" → ")
            .append(page.e(hop.to))
            .append("</h4>");
        out.append("<svg class=\"hist\" viewBox=\"0 0 ")
            .append(px(w))
            .append(" ")
            .append(px(h))
            .append("\" width=\"")
            .append(px(w))
            .append("\" height=\"")
            .append(px(h))
            .append("\"><g class=\"axis\">");
        out.append("<line x1=\"")
            .append(px(left))
            .append("\" y1=\"")
            .append(px(plot_top + plot_h))
            .append("\" x2=\"")
            .append(px(left + plot_w))
            .append("\" y2=\"")
            .append(px(plot_top + plot_h))
            .append("\"/>");
        for (const Tick& t : k_ticks) {
            if (t.ns > max_ns * 1.02) break;
            const double x = x_of(t.ns);
            out.append("<line x1=\"")
                .append(px(x))
                .append("\" y1=\"")
                .append(px(plot_top + plot_h))
                .append("\" x2=\"")
                .append(px(x))
                .append("\" y2=\"")
                .append(px(plot_top + plot_h + 4))
                .append("\"/><text x=\"")
                .append(px(x))
                .append("\" y=\"")
                .append(px(plot_top + plot_h + 16))
                .append("\" text-anchor=\"middle\">")
                .append(t.label)
                .append("</text>");
        }
        out.append("<text x=\"")
            .append(px(left - 6))
            .append("\" y=\"")
            .append(px(plot_top + 8))
            .append("\" text-anchor=\"end\">")
            .append(num(top_count))
            .append("</text><text x=\"")
            .append(px(left - 6))
            .append("\" y=\"")
            .append(px(plot_top + plot_h))
            .append("\" text-anchor=\"end\">0</text></g>");
        const double bw = plot_w / static_cast<double>(bins);
        for (std::size_t b = 0; b < bins; ++b) {
            if (count[b] == 0) continue;
            const double bh = std::max(1.5, plot_h * static_cast<double>(count[b]) / static_cast<double>(top_count));
            out.append("<rect class=\"bar ")
                .append(cls)
                .append("\" x=\"")
                .append(px(left + bw * static_cast<double>(b) + 0.5))
                .append("\" y=\"")
                .append(px(plot_top + plot_h - bh))
                .append("\" width=\"")
                .append(px(std::max(1.0, bw - 1)))
                .append("\" height=\"")
                .append(px(bh))
                .append("\"><title>")
                .append(num(count[b]))
                .append("</title></rect>");
        }
        const double p50 = x_of(static_cast<double>(hop.p50_ns));
        const double p99 = x_of(static_cast<double>(hop.p99_ns));
        const bool close = std::abs(p99 - p50) < 70;
        out.append("<line class=\"pline p50l\" x1=\"")
            .append(px(p50))
            .append("\" y1=\"")
            .append(px(plot_top - 4))
            .append("\" x2=\"")
            .append(px(p50))
            .append("\" y2=\"")
            .append(px(plot_top + plot_h))
            .append("\"/>");
        out.append("<line class=\"pline p99l\" x1=\"")
            .append(px(p99))
            .append("\" y1=\"")
            .append(px(plot_top - 4))
            .append("\" x2=\"")
            .append(px(p99))
            .append("\" y2=\"")
            .append(px(plot_top + plot_h))
            .append("\"/>");
        const bool p50_left = p50 > w - 140;
        out.append("<text class=\"plabel\" x=\"")
            .append(px(p50 + (p50_left ? -4 : 4)))
            .append("\" y=\"")
            .append(px(plot_top - 8))
            .append("\" text-anchor=\"")
            .append(p50_left ? "end" : "start")
            .append("\">p50 ")
            .append(duration(hop.p50_ns))
            .append("</text>");
        const bool p99_left = p99 > w - 140;
        out.append("<text class=\"plabel p99t\" x=\"")
            .append(px(p99 + (p99_left ? -4 : 4)))
            .append("\" y=\"")
            .append(px(close ? plot_top + 10 : plot_top - 8))
            .append("\" text-anchor=\"")
            .append(p99_left ? "end" : "start")
            .append("\">p99 ")
            .append(duration(hop.p99_ns))
            .append("</text>");
        out.append("</svg><p class=\"note\">n ")
            .append(num(hop.count))
            .append(" · min ")
            .append(duration(hop.min_ns))
            .append(" · max ")
            .append(duration(hop.max_ns));
        if (static_cast<std::int64_t>(samples[i].size()) < hop.count)
            out.append(" · histogram of ").append(num(static_cast<std::int64_t>(samples[i].size()))).append(" sampled");
        out.append("</p></div>\n");
    }
    out.append(
        "</div>\n<p class=\"note\">Time axis: log-like (0 ns is on it: taps in one pass through the kernel "
        "share a timestamp). p50 and p99 are the exact nearest-rank percentiles of all journeys");
    if (step > 1)
        out.append("; the bars count every ")
            .append(num(step))
            .append("th journey (")
            .append(num(sampled))
            .append(" hop times)");
    out.append(".");
    if (shown < totals.size())
        out.append(" ")
            .append(num(static_cast<std::int64_t>(totals.size() - shown)))
            .append(" more hops are in the JSON report.");
    out.append("</p>\n</section>\n");
}

}  // namespace hoptrace::report::html
