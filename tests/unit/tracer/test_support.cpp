#include "test_support.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <sstream>

namespace hoptrace::test {

std::string data_path(const std::string& name) { return std::string(HOPTRACE_TEST_DATA) + "/tracer/" + name; }

ReadResult read_capture(const std::string& path) {
    ReadResult result;
    auto file = CaptureFile::open(path);
    if (!file) {
        result.error = file.error();
        return result;
    }
    FileFrame ff;
    for (;;) {
        auto more = (*file)->next(ff);
        if (!more) {
            result.error = more.error();
            break;
        }
        if (!*more) {
            break;
        }
        OwnedFrame f;
        f.ts_ns = ff.frame.ts_ns;
        f.wire_len = ff.frame.wire_len;
        f.link_type = ff.frame.link_type;
        f.direction = ff.frame.direction;
        f.interface = ff.interface;
        f.bytes.assign(ff.frame.bytes.begin(), ff.frame.bytes.end());
        result.frames.push_back(std::move(f));
    }
    result.interfaces = (*file)->interfaces();
    EXPECT_EQ((*file)->frames_read(), result.frames.size());
    return result;
}

std::vector<OwnedFrame> read_frames(const std::string& name) {
    ReadResult r = read_capture(data_path(name));
    EXPECT_FALSE(r.error) << *r.error;
    return std::move(r.frames);
}

namespace {

struct PipeCloser {
    void operator()(std::FILE* f) const noexcept { pclose(f); }
};

std::vector<std::string> split(const std::string& line, char separator) {
    std::vector<std::string> parts;
    std::string part;
    std::istringstream in(line);
    while (std::getline(in, part, separator)) {
        parts.push_back(part);
    }
    if (!line.empty() && line.back() == separator) {
        parts.emplace_back();
    }
    return parts;
}

}  // namespace

std::optional<std::vector<std::vector<std::string>>> tshark_fields(const std::string& path,
                                                                   const std::vector<std::string>& fields) {
    // Reassembly off: we compare fragments as they are on the wire.
    std::string command = "tshark -n -o ip.defragment:FALSE -o ipv6.defragment:FALSE -r '" + path +
                          "' -T fields -E occurrence=a -E separator='|'";
    for (const std::string& f : fields) {
        command += " -e " + f;
    }
    command += " 2>/dev/null";
    std::unique_ptr<std::FILE, PipeCloser> pipe(popen(command.c_str(), "r"));
    if (!pipe) {
        return std::nullopt;
    }
    std::vector<std::vector<std::string>> rows;
    std::string line;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe.get()) != nullptr) {
        line += buffer;
        if (!line.empty() && line.back() == '\n') {
            line.pop_back();
            auto row = split(line, '|');
            row.resize(fields.size());
            rows.push_back(std::move(row));
            line.clear();
        }
    }
    const int status = pclose(pipe.release());
    if (status != 0 && rows.empty()) {
        return std::nullopt;
    }
    return rows;
}

std::int64_t epoch_to_ns(const std::string& text) {
    const auto dot = text.find('.');
    const std::int64_t seconds = std::stoll(text.substr(0, dot));
    std::string fraction = dot == std::string::npos ? "" : text.substr(dot + 1);
    fraction.resize(9, '0');
    return seconds * 1'000'000'000 + std::stoll(fraction);
}

std::string first_of(const std::string& occurrences) { return occurrences.substr(0, occurrences.find(',')); }

std::string last_of(const std::string& occurrences) {
    const auto comma = occurrences.rfind(',');
    return comma == std::string::npos ? occurrences : occurrences.substr(comma + 1);
}

std::uint64_t number(const std::string& text) { return std::stoull(text, nullptr, 0); }

}  // namespace hoptrace::test
