#pragma once
// The page's style sheet and script (report/html/page.css, page.js), embedded at build time (embed.cmake): each the
// file's bytes without its final newline.

#include <string_view>

namespace hoptrace::report::html {

std::string_view page_css();
std::string_view page_js();

}  // namespace hoptrace::report::html
