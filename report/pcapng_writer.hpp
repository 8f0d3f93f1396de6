#pragma once
// Writing pcapng files (the IETF pcapng draft: section header, interface description and enhanced packet
// blocks). Our own writer because libpcap writes only classic pcap: one link type for the whole file, no
// interfaces, no per-packet comments. Blocks are written in host byte order (the section header's
// byte-order magic says which), timestamps always in nanoseconds (if_tsresol 9).
//
// Output is buffered; every write is checked. The first failure is kept and returned by every later call,
// and a file that was not finish()ed successfully is removed (if it is a regular file: never /dev/null, a
// pipe or a terminal), so a failed export leaves no partial file behind.

#include "tracer/handles.hpp"
#include "tracer/packet.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::report {

struct PcapngSection {
    std::string application;  // shb_userappl, e.g. "hoptrace 0.1.0"
    std::string comment;      // opt_comment of the section; none when empty
};

struct PcapngInterface {
    std::string name;             // if_name
    std::string description;      // if_description; none when empty
    std::uint16_t link_type = 1;  // LINKTYPE_* of the frames (1 Ethernet)
    std::uint32_t snaplen = 0;    // 0: no limit
};

struct PcapngPacket {
    std::uint32_t interface = 0;               // id returned by add_interface()
    std::int64_t ts_ns = 0;                    // nanoseconds since the Unix epoch; must not be negative
    std::uint32_t wire_len = 0;                // original length; written as at least bytes.size()
    Direction direction = Direction::unknown;  // epb_flags inbound/outbound; none when unknown
    std::span<const std::uint8_t> bytes;       // the frame, starting with the interface's link-layer header
    std::string_view comment;                  // opt_comment (UTF-8); none when empty
};

class PcapngWriter {
public:
    // Creates (or truncates) `path` and writes the section header block. Errors are one line naming the file:
    // "out.pcapng: cannot create: No such file or directory".
    static tl::expected<PcapngWriter, std::string> create(const std::string& path, const PcapngSection& section);

    PcapngWriter(PcapngWriter&&) noexcept = default;
    PcapngWriter& operator=(PcapngWriter&&) = delete;
    PcapngWriter(const PcapngWriter&) = delete;
    PcapngWriter& operator=(const PcapngWriter&) = delete;
    // Without a successful finish(): closes the file and removes it (regular files only).
    ~PcapngWriter();

    // Writes an interface description block; returns its interface id (0, 1, … in call order).
    tl::expected<std::uint32_t, std::string> add_interface(const PcapngInterface& interface);

    // Writes an enhanced packet block. Its interface must have been added before.
    tl::expected<void, std::string> write(const PcapngPacket& packet);

    // Writes an interface statistics block for an interface added before: isb_ifdrop = kernel_drops (what the
    // capture lost there), at ts_ns (nanoseconds since the Unix epoch).
    tl::expected<void, std::string> write_statistics(std::uint32_t interface, std::int64_t ts_ns,
                                                     std::uint64_t kernel_drops);

    // Flushes and closes the file, which is then kept. On failure the file is removed.
    tl::expected<void, std::string> finish();

    [[nodiscard]] std::uint32_t interfaces() const noexcept { return m_interfaces; }
    [[nodiscard]] std::uint64_t packets() const noexcept { return m_packets; }
    [[nodiscard]] const std::string& path() const noexcept { return m_path; }

private:
    PcapngWriter(std::string path, FilePtr file, std::unique_ptr<char[]> buffer, bool regular);

    tl::expected<void, std::string> put(const void* data, std::size_t size);
    tl::expected<void, std::string> put_block();  // m_block, after its length fields are filled in
    tl::expected<void, std::string> fail(const std::string& what);
    void discard() noexcept;  // close and remove the partial file

    std::string m_path;
    std::unique_ptr<char[]> m_buffer;  // stdio's buffer: declared before m_file, so it outlives it
    FilePtr m_file;
    bool m_regular = false;
    std::vector<std::uint8_t> m_block;  // block being assembled, reused
    std::uint32_t m_interfaces = 0;
    std::uint64_t m_packets = 0;
    std::optional<std::string> m_error;  // the first failure, returned by every later call
};

}  // namespace hoptrace::report
