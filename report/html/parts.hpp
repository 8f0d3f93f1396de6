#pragma once
// The HTML page's parts (page.cpp: the page and its tables; path_diagram.cpp; ladder.cpp; charts.cpp: box plots and
// histograms) and what they share. Internal to the report library; the page's API is page.hpp.

#include "report/model.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace hoptrace::report::html {

// Text: every string from the capture or the command line goes through esc() (clip, then html_escape).
// clip cuts `s` to at most `n` code points, marking the cut with "…"; it works on bytes, so invalid UTF-8 stays
// invalid and html_escape replaces it.
std::string clip(std::string_view s, std::size_t n);
std::string esc(std::string_view s, std::size_t n);

std::string px(double v);  // an SVG coordinate: one decimal at most
std::string num(std::int64_t v);
std::string plural(std::int64_t n, const char* one, const char* many);
std::string duration(std::int64_t ns);  // format_duration, escaped
std::string icmp_name(std::int64_t icmp, std::int64_t type, std::int64_t code);
// A tuple as HTML, each part that differs from `other` (when given) marked.
std::string tuple_html(std::int64_t proto, const Tuple& t, const Tuple* other, std::size_t n);

// The time axis of box plots and histograms: log-like, but 0 ns is a real (and common) hop time.
double time_axis(double ns);
struct Tick {
    double ns;
    const char* label;
};
inline constexpr std::array<Tick, 9> k_ticks{{{0, "0"},
                                              {1e3, "1 µs"},
                                              {1e4, "10 µs"},
                                              {1e5, "100 µs"},
                                              {1e6, "1 ms"},
                                              {1e7, "10 ms"},
                                              {1e8, "100 ms"},
                                              {1e9, "1 s"},
                                              {1e10, "10 s"}}};

// The page being written, and the model's points by name and id.
struct Page {
    Page(const ReportModel& model, const HtmlSamples& samples);

    const ReportModel& model;
    const HtmlSamples& samples;
    const HtmlOptions& opt;
    std::string out;
    std::map<std::string, std::size_t> point_index;  // name -> model.points index
    std::map<std::int64_t, std::size_t> point_by_id;

    [[nodiscard]] std::size_t text_limit() const { return std::max<std::size_t>(opt.max_text_chars, 8); }
    [[nodiscard]] std::string e(std::string_view s) const { return esc(s, text_limit()); }
    [[nodiscard]] std::string point_name(std::int64_t id) const;
    // The ICMP errors of a flow among those the page lists (none: nullptr).
    [[nodiscard]] const std::vector<std::size_t>* errors_of(std::int64_t flow) const;
};

void path_diagram(Page& page);
void ladder(Page& page, const Flow& flow);
void box_plots(Page& page, const Flow& flow);
void histograms(Page& page);

}  // namespace hoptrace::report::html
