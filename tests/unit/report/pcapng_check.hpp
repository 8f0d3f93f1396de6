#pragma once
// Shared by the pcapng writer and export tests: a strict pcapng block walker written from the format's
// specification (independent of the writer under test and of tracer::CaptureFile), and running Wireshark's
// tools (tshark, capinfos) when they are installed.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "temp_dir.hpp"  // TempDir, used with these checks
#include <vector>

namespace hoptrace::test {

struct WalkedInterface {
    std::uint16_t link_type = 0;
    std::uint32_t snaplen = 0;
    std::map<std::uint16_t, std::vector<std::string>> options;  // code -> values, in file order
};

struct WalkedPacket {
    std::uint32_t interface = 0;
    std::uint64_t timestamp = 0;  // in the interface's units (ns with if_tsresol 9)
    std::uint32_t original_length = 0;
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> comments;
    std::optional<std::uint32_t> flags;  // epb_flags
};

struct Walked {
    std::map<std::uint16_t, std::vector<std::string>> section_options;
    std::vector<WalkedInterface> interfaces;
    std::vector<WalkedPacket> packets;
    std::string error;  // "" when every block was well formed
};

// Reads a little-endian (this machine's order) pcapng file block by block and checks every length, the
// 32-bit alignment of every block and option, that options end with opt_endofopt exactly where the block
// does, and that the trailing length repeats the leading one.
Walked walk_pcapng(const std::string& path);

// Runs `command` with sh; its stdout, or nullopt when it cannot run or exits non-zero.
std::optional<std::string> run_command(const std::string& command);

// True when `tool` is on PATH.
bool have_tool(const std::string& tool);

// Rows of `tshark -r path -T fields -e …` split at tabs (tshark -E separator=/t); nullopt when it fails.
std::optional<std::vector<std::vector<std::string>>> tshark_fields(const std::string& path,
                                                                   const std::vector<std::string>& fields,
                                                                   const std::string& display_filter = "");

// tshark's frame.time_epoch ("1795294903.485709370") as ns, without a double in between.
std::int64_t epoch_ns(const std::string& text);

}  // namespace hoptrace::test
