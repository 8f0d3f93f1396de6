#pragma once
// The HTML report (`hoptrace report --format html`): one self-contained page — inline CSS, inline SVG and one small
// inline script (page.css, page.js, embedded at build time), nothing fetched (a Content-Security-Policy forbids it) —
// rendered from the report model and its HTML samples (load_report with Selection::html: the sightings of a sample
// of each drawn flow's journeys for the ladders, a sample of hop times for the histograms). Every string that comes
// from the capture or the command line is escaped. HtmlOptions bounds the size of the page whatever the size of the
// capture (docs/cli.md, "The HTML report").

#include "report/html/escape.hpp"
#include "report/model.hpp"

#include <string>

namespace hoptrace::report {

// The page. `model` must hold its samples (model.html; std::invalid_argument otherwise).
std::string render_html(const ReportModel& model);

}  // namespace hoptrace::report
