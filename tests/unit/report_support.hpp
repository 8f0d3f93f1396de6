#pragma once
// The report of a test database, as the tests read it: the JSON contract (hoptrace-report/1) and the HTML page.

#include "report/html/page.hpp"
#include "report/json.hpp"
#include "report/model.hpp"

#include <optional>
#include <string>

namespace hoptrace::test {

inline nlohmann::ordered_json report_json(const store::Database& db,
                                          std::optional<report::FlowFilter> flows = std::nullopt) {
    return report::to_json(report::load_report(db, {std::move(flows), std::nullopt}));
}

inline std::string html_page(const store::Database& db, const report::HtmlOptions& options = {},
                             std::optional<report::FlowFilter> flows = std::nullopt) {
    return report::render_html(report::load_report(db, {std::move(flows), options}));
}

}  // namespace hoptrace::test
