#pragma once
// Escaping for the HTML page.

#include <string>
#include <string_view>

namespace hoptrace::report {

// Escapes text for HTML element content and for quoted attribute values: & < > " ' become character
// references, and so does the colon of "://" (the page then holds no URL, yet shows one as it was); invalid UTF-8
// and control characters other than tab and newline become U+FFFD.
std::string html_escape(std::string_view text);

}  // namespace hoptrace::report
