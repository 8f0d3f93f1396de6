#pragma once
// Reading capture files: classic pcap (through libpcap) and pcapng (our own block reader, because libpcap
// does not tell which interface of a multi-interface pcapng file a packet came from, and we make one
// point per interface). Both give micro- or nanosecond timestamps as ts_ns.

#include "tracer/packet.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace {

struct FileInterface {
    std::string name;         // pcapng if_name when present, else ""
    std::string description;  // pcapng if_description when present, else ""
    LinkType link_type = LinkType::ethernet;
    std::uint32_t snaplen = 0;
    // pcapng: packets the capturing interface dropped (isb_ifdrop of its last interface statistics block).
    std::optional<std::uint64_t> kernel_drops;
};

struct FileFrame {
    Frame frame;                  // frame.bytes is valid until the next call to next()
    std::uint32_t interface = 0;  // index into interfaces()
};

class CaptureFile {
public:
    // Opens `path` (pcap or pcapng, detected by the magic number). The error is one line that names the
    // file and says what is wrong ("x.pcap: not a pcap or pcapng file", "… : No such file or directory",
    // "… : unsupported link type 147 (supported: Ethernet, Linux cooked v1/v2, raw IP)").
    static tl::expected<std::unique_ptr<CaptureFile>, std::string> open(const std::string& path);

    virtual ~CaptureFile() = default;

    // Interfaces seen so far (a pcapng file may describe one later, before its first packet).
    [[nodiscard]] virtual const std::vector<FileInterface>& interfaces() const = 0;

    // true: `out` holds the next frame; false: clean end of file. The error names the file, says what is
    // wrong and after how many frames ("x.pcap: truncated packet record after 1042 packets").
    // A frame whose link type is unsupported is an error for that file.
    virtual tl::expected<bool, std::string> next(FileFrame& out) = 0;

    [[nodiscard]] virtual std::uint64_t frames_read() const = 0;
};

}  // namespace hoptrace
