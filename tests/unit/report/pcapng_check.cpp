#include "pcapng_check.hpp"

#include <cstdlib>  // mkdtemp (POSIX, declared by glibc's stdlib.h)

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace hoptrace::test {
namespace {

std::uint16_t u16(const std::vector<std::uint8_t>& b, std::size_t at) {
    std::uint16_t v = 0;
    std::memcpy(&v, b.data() + at, 2);
    return v;
}

std::uint32_t u32(const std::vector<std::uint8_t>& b, std::size_t at) {
    std::uint32_t v = 0;
    std::memcpy(&v, b.data() + at, 4);
    return v;
}

// Options in [at, end): each code, length, value, zero padding to 4; the last is opt_endofopt, ending at `end`.
bool walk_options(const std::vector<std::uint8_t>& b, std::size_t at, std::size_t end,
                  std::map<std::uint16_t, std::vector<std::string>>& out, std::string& error) {
    if (at == end) return true;  // no options at all is allowed
    while (at + 4 <= end) {
        const std::uint16_t code = u16(b, at);
        const std::uint16_t len = u16(b, at + 2);
        at += 4;
        if (code == 0) {
            if (len != 0 || at != end) {
                error = "opt_endofopt is not the last 4 bytes of the options";
                return false;
            }
            return true;
        }
        const std::size_t padded = (std::size_t{len} + 3) & ~std::size_t{3};
        if (at + padded > end) {
            error = "option " + std::to_string(code) + " of length " + std::to_string(len) + " runs past its block";
            return false;
        }
        for (std::size_t i = at + len; i < at + padded; ++i) {
            if (b[i] != 0) {
                error = "option " + std::to_string(code) + ": padding is not zero";
                return false;
            }
        }
        out[code].emplace_back(reinterpret_cast<const char*>(b.data() + at), len);
        at += padded;
    }
    error = "options without opt_endofopt";
    return false;
}

}  // namespace

Walked walk_pcapng(const std::string& path) {
    Walked w;
    std::ifstream in(path, std::ios::binary);
    const std::vector<std::uint8_t> b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::size_t at = 0;
    bool first = true;
    while (at < b.size()) {
        const std::string where = "block at offset " + std::to_string(at) + ": ";
        if (at + 12 > b.size()) {
            w.error = where + "truncated header";
            return w;
        }
        const std::uint32_t type = u32(b, at);
        const std::uint32_t len = u32(b, at + 4);
        if (len < 12 || len % 4 != 0 || at + len > b.size()) {
            w.error = where + "bad total length " + std::to_string(len);
            return w;
        }
        if (u32(b, at + len - 4) != len) {
            w.error = where + "trailing length " + std::to_string(u32(b, at + len - 4)) + " != " + std::to_string(len);
            return w;
        }
        if (first && type != 0x0A0D0D0A) {
            w.error = "the file does not start with a section header block";
            return w;
        }
        first = false;
        const std::size_t end = at + len - 4;
        std::string error;
        if (type == 0x0A0D0D0A) {
            if (len < 28 || u32(b, at + 8) != 0x1A2B3C4D || u16(b, at + 12) != 1 || u16(b, at + 14) != 0) {
                w.error = where + "bad section header (byte order magic or version)";
                return w;
            }
            if (!walk_options(b, at + 24, end, w.section_options, error)) {
                w.error = where + error;
                return w;
            }
        } else if (type == 1) {
            WalkedInterface i;
            i.link_type = u16(b, at + 8);
            i.snaplen = u32(b, at + 12);
            if (len < 20 || !walk_options(b, at + 16, end, i.options, error)) {
                w.error = where + (error.empty() ? "short interface description" : error);
                return w;
            }
            w.interfaces.push_back(std::move(i));
        } else if (type == 6) {
            if (len < 32) {
                w.error = where + "short enhanced packet block";
                return w;
            }
            WalkedPacket p;
            p.interface = u32(b, at + 8);
            p.timestamp = (std::uint64_t{u32(b, at + 12)} << 32) | u32(b, at + 16);
            const std::uint32_t cap_len = u32(b, at + 20);
            p.original_length = u32(b, at + 24);
            const std::size_t data = at + 28;
            const std::size_t options = data + ((std::size_t{cap_len} + 3) & ~std::size_t{3});
            if (options > end || p.interface >= w.interfaces.size() || p.original_length < cap_len) {
                w.error = where + "enhanced packet block: bad captured length or interface";
                return w;
            }
            p.bytes.assign(b.begin() + static_cast<std::ptrdiff_t>(data),
                           b.begin() + static_cast<std::ptrdiff_t>(data + cap_len));
            std::map<std::uint16_t, std::vector<std::string>> opts;
            if (!walk_options(b, options, end, opts, error)) {
                w.error = where + error;
                return w;
            }
            p.comments = opts[1];
            if (!opts[2].empty()) {
                if (opts[2].front().size() != 4) {
                    w.error = where + "epb_flags is not 4 bytes";
                    return w;
                }
                std::uint32_t flags = 0;
                std::memcpy(&flags, opts[2].front().data(), 4);
                p.flags = flags;
            }
            w.packets.push_back(std::move(p));
        }
        at += len;
    }
    if (first) w.error = "empty file";
    return w;
}

std::optional<std::string> run_command(const std::string& command) {
    struct PipeCloser {
        void operator()(std::FILE* f) const noexcept { pclose(f); }
    };
    std::unique_ptr<std::FILE, PipeCloser> pipe(popen(command.c_str(), "r"));
    if (!pipe) return std::nullopt;
    std::string out;
    char buffer[65536];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe.get())) > 0) out.append(buffer, n);
    if (pclose(pipe.release()) != 0) return std::nullopt;
    return out;
}

bool have_tool(const std::string& tool) { return run_command("command -v " + tool + " >/dev/null 2>&1").has_value(); }

std::optional<std::vector<std::vector<std::string>>> tshark_fields(const std::string& path,
                                                                   const std::vector<std::string>& fields,
                                                                   const std::string& display_filter) {
    std::string command = "tshark -n -r '" + path + "' -T fields -E separator=/t -E occurrence=a";
    for (const std::string& f : fields) command += " -e " + f;
    if (!display_filter.empty()) command += " -Y '" + display_filter + "'";
    command += " 2>/dev/null";
    const auto out = run_command(command);
    if (!out) return std::nullopt;
    std::vector<std::vector<std::string>> rows;
    std::istringstream lines(*out);
    for (std::string line; std::getline(lines, line);) {
        std::vector<std::string> row;
        std::size_t start = 0;
        for (;;) {
            const std::size_t tab = line.find('\t', start);
            row.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
            if (tab == std::string::npos) break;
            start = tab + 1;
        }
        row.resize(fields.size());
        rows.push_back(std::move(row));
    }
    return rows;
}

std::int64_t epoch_ns(const std::string& text) {
    const auto dot = text.find('.');
    const std::int64_t seconds = std::stoll(text.substr(0, dot));
    std::string fraction = dot == std::string::npos ? "" : text.substr(dot + 1);
    if (fraction.size() > 9) return -1;
    fraction.resize(9, '0');
    return seconds * 1'000'000'000 + std::stoll(fraction);
}

}  // namespace hoptrace::test
