#pragma once
// Shared by the tracer tests: reading whole capture files into owned frames, and asking tshark (the
// independent reference) what it sees in them.

#include "tracer/capture_file.hpp"
#include "tracer/dissect.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace::test {

// tests/data/tracer/<name>
std::string data_path(const std::string& name);

// A frame that owns its bytes (FileFrame::frame.bytes only lives until the next read).
struct OwnedFrame {
    std::int64_t ts_ns = 0;
    std::uint32_t wire_len = 0;
    LinkType link_type = LinkType::ethernet;
    Direction direction = Direction::unknown;
    std::uint32_t interface = 0;
    std::vector<std::uint8_t> bytes;

    [[nodiscard]] Frame frame() const { return Frame{ts_ns, wire_len, link_type, direction, bytes}; }
    [[nodiscard]] PacketRecord record() const { return dissect(frame()); }
};

struct ReadResult {
    std::vector<OwnedFrame> frames;
    std::vector<FileInterface> interfaces;
    std::optional<std::string> error;  // from open() or from next()
};

// Reads every frame until the end of the file or the first error.
ReadResult read_capture(const std::string& path);

// Like read_capture, but fails the current test on any error.
std::vector<OwnedFrame> read_frames(const std::string& name);

// One row per frame of `tshark -r path -T fields -E occurrence=a -e f1 -e f2 …` (fields of a row in the
// order asked; several occurrences of a field joined by ','). nullopt when tshark cannot be run.
std::optional<std::vector<std::vector<std::string>>> tshark_fields(const std::string& path,
                                                                   const std::vector<std::string>& fields);

// "1700000000.123456789" (tshark frame.time_epoch) -> ns since the epoch.
std::int64_t epoch_to_ns(const std::string& text);

// The first / last of a tshark field's comma-separated occurrences ("" when absent).
std::string first_of(const std::string& occurrences);
std::string last_of(const std::string& occurrences);

// Decimal or 0x-prefixed hexadecimal as tshark prints numbers.
std::uint64_t number(const std::string& text);

}  // namespace hoptrace::test
