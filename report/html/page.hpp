#pragma once
// The HTML report (`hoptrace report --format html`): one self-contained page — inline CSS, inline SVG and one
// small inline script, nothing fetched (a Content-Security-Policy forbids it) — rendered from the report model
// (build_report) plus bounded reads of the store for what the model summarises away: the sightings of a sample
// of each drawn flow's journeys (ladder diagrams) and a sample of hop times (histograms). Packets are never
// re-parsed. Every string that comes from the capture or the command line is escaped. HtmlOptions bounds the
// size of the page whatever the size of the capture (docs/cli.md, "The HTML report").

#include "store/database.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace hoptrace::report {

struct HtmlOptions {
    std::size_t max_flows_drawn = 20;            // flows with a ladder diagram and hop box plots
    std::size_t max_journeys_per_ladder = 60;    // evenly sampled from the flow's journeys (in time order) …
    std::size_t max_notable_journeys = 8;        // … plus up to this many lost and ICMP error journeys
    std::size_t max_lanes = 12;                  // points (lanes) per ladder
    std::size_t histogram_bins = 40;             // per hop histogram, on a log-like time axis
    std::size_t max_histograms = 24;             // hops (direction, point pair) of all flows with a histogram
    std::size_t max_histogram_journeys = 20000;  // journeys sampled (evenly, by id) for the histograms
    std::size_t max_table_rows = 500;            // rows of the flow, NAT, ICMP error and point tables
    std::size_t max_diagram_points = 48;         // points drawn in the path diagram
    std::size_t max_text_chars = 160;            // any one string from the capture (names, command line …)
};

// The page. `report` is build_report(db); `db` is read for the ladder and histogram samples only.
std::string render_html(const nlohmann::ordered_json& report, const store::Database& db,
                        const HtmlOptions& options = {});

// Escapes text for HTML element content and for quoted attribute values: & < > " ' become character
// references, and so does the colon of "://" (the page then holds no URL, yet shows one as it was); invalid UTF-8
// and control characters other than tab and newline become U+FFFD.
std::string html_escape(std::string_view text);

}  // namespace hoptrace::report
