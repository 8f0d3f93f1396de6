#pragma once
// Private to tracer/: pcapng files, read block by block by our own reader, because libpcap does not say
// which interface of a multi-interface file a packet came from.
//
// Supported: section header blocks in either byte order (several sections in one file; interfaces of a
// later section are appended to interfaces(), so FileFrame::interface is a file-wide index), interface
// description blocks (if_name, if_description, if_tsresol, if_tsoffset), enhanced and obsolete packet
// blocks (epb_flags/pack_flags direction). Other blocks are skipped by their length. A simple packet
// block is an error: it carries no timestamp, and a packet without one cannot be timed against the other
// points of a journey, so we refuse rather than invent a time.

#include "tracer/capture_file.hpp"
#include "tracer/capture_source.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace {

class PcapngFile final : public CaptureFile {
public:
    // `file` is positioned at the start of the file, which starts with a section header block; `size` is
    // the file size when known (a regular file), to check block lengths against it.
    static tl::expected<std::unique_ptr<CaptureFile>, std::string> open(const std::string& path, FilePtr file,
                                                                        std::optional<std::uint64_t> size);

    [[nodiscard]] const std::vector<FileInterface>& interfaces() const override { return m_interfaces; }
    tl::expected<bool, std::string> next(FileFrame& out) override;
    [[nodiscard]] std::uint64_t frames_read() const override { return m_frames; }

private:
    // How an interface's timestamps convert to ns: units of 10^-exponent or 2^-exponent seconds, plus an
    // offset in seconds.
    struct Clock {
        bool power_of_two = false;
        std::uint8_t exponent = 6;
        std::int64_t offset_s = 0;
    };

    enum class Got { block, end_of_file };

    PcapngFile(std::string path, FilePtr file, std::optional<std::uint64_t> size);

    tl::expected<Got, std::string> read_block();
    tl::expected<void, std::string> section_header();
    tl::expected<void, std::string> interface_description();
    tl::expected<void, std::string> interface_statistics();
    tl::expected<void, std::string> packet(FileFrame& out, bool obsolete);
    // Calls f(code, value) for each option in [begin, end) of the current block.
    template <typename F>
    tl::expected<void, std::string> for_each_option(std::size_t begin, std::size_t end, std::string_view block_name,
                                                    F f);
    [[nodiscard]] tl::expected<std::int64_t, std::string> to_ns(const Clock& clock, std::uint64_t ts) const;

    // "x.pcapng: <what> after N packets"
    [[nodiscard]] std::string error(std::string_view what) const;

    std::string m_path;
    FilePtr m_file;
    std::optional<std::uint64_t> m_size;
    std::uint64_t m_offset = 0;         // file offset of the block in m_block / of the next block
    std::vector<std::uint8_t> m_block;  // the current block, reused from block to block
    std::uint32_t m_block_type = 0;
    bool m_big_endian = false;                  // byte order of the current section
    std::size_t m_section_first_interface = 0;  // interfaces() index of the current section's interface 0
    std::vector<FileInterface> m_interfaces;
    std::vector<Clock> m_clocks;  // parallel to m_interfaces
    std::uint64_t m_frames = 0;
    std::optional<std::string> m_error;  // once an error is returned, next() keeps returning it
    bool m_ended = false;
};

}  // namespace hoptrace
