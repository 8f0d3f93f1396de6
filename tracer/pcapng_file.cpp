#include "tracer/pcapng_file.hpp"
#include "tracer/errno_text.hpp"
#include "tracer/pcapng_format.hpp"

#include "tracer/wire.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace hoptrace {
namespace {

using namespace pcapng;  // NOLINT(google-build-using-namespace): the format's numbers, unqualified

constexpr std::size_t k_min_block = 12;           // type, length, trailing length
constexpr std::size_t k_min_section_header = 28;  // + byte-order magic, version, section length
constexpr std::size_t k_min_interface_description = 20;
constexpr std::size_t k_min_interface_statistics = 24;  // + interface id, timestamp
constexpr std::size_t k_min_packet = 32;
constexpr std::size_t k_packet_data = 28;  // offset of the packet data in an EPB/OPB
// Guards the allocation when the file size is unknown (a pipe); a packet block is never near this.
constexpr std::uint32_t k_max_block = 64U * 1024 * 1024;

constexpr std::int64_t k_ns_per_s = 1'000'000'000;

// Timestamps are 64-bit counts of units as small as 2^-63 s; their conversion to ns needs more than 64
// bits in between.
using Wide = __int128_t;  // the compiler's spelling that -Wpedantic accepts

std::size_t padded4(std::size_t n) noexcept { return (n + 3) & ~std::size_t{3}; }

std::string option_string(std::span<const std::uint8_t> value) {
    std::string s(value.begin(), value.end());
    while (!s.empty() && s.back() == '\0') {  // some writers count a terminating NUL
        s.pop_back();
    }
    return s;
}

}  // namespace

tl::expected<std::unique_ptr<CaptureFile>, std::string> PcapngFile::open(const std::string& path, FilePtr file,
                                                                         std::optional<std::uint64_t> size) {
    std::unique_ptr<PcapngFile> reader(new PcapngFile(path, std::move(file), size));
    auto got = reader->read_block();
    if (!got) {
        return tl::unexpected(got.error());
    }
    if (*got != Got::block || reader->m_block_type != k_section_header) {
        return tl::unexpected(path + ": not a pcap or pcapng file");
    }
    if (auto ok = reader->section_header(); !ok) {
        return tl::unexpected(ok.error());
    }
    return std::unique_ptr<CaptureFile>(std::move(reader));
}

PcapngFile::PcapngFile(std::string path, FilePtr file, std::optional<std::uint64_t> size)
    : m_path(std::move(path)), m_file(std::move(file)), m_size(size) {}

std::string PcapngFile::error(std::string_view what) const {
    return m_path + ": " + std::string(what) + " after " + std::to_string(m_frames) + " packets";
}

tl::expected<bool, std::string> PcapngFile::next(FileFrame& out) {
    if (m_error) {
        return tl::unexpected(*m_error);
    }
    if (m_ended) {
        return false;
    }
    auto fail = [this](std::string message) {
        m_error = std::move(message);
        return tl::unexpected(*m_error);
    };
    for (;;) {
        auto got = read_block();
        if (!got) {
            return fail(got.error());
        }
        if (*got == Got::end_of_file) {
            m_ended = true;
            return false;
        }
        tl::expected<void, std::string> ok;
        switch (m_block_type) {
            case k_section_header:
                ok = section_header();
                break;
            case k_interface_description:
                ok = interface_description();
                break;
            case k_enhanced_packet:
            case k_obsolete_packet:
                ok = packet(out, m_block_type == k_obsolete_packet);
                if (ok) {
                    ++m_frames;
                    return true;
                }
                break;
            case k_interface_statistics:
                ok = interface_statistics();
                break;
            case k_simple_packet:
                ok = tl::unexpected(error("simple packet block at offset " + std::to_string(m_offset) +
                                          " has no timestamp, and hoptrace needs one to time packets across points"));
                break;
            default:
                break;  // name resolution, statistics, decryption secrets, custom …: nothing we need
        }
        if (!ok) {
            return fail(ok.error());
        }
    }
}

tl::expected<PcapngFile::Got, std::string> PcapngFile::read_block() {
    if (!m_block.empty()) {
        m_offset += m_block.size();  // past the previous block
        m_block.clear();
    }
    auto at = [this] { return " at offset " + std::to_string(m_offset); };  // built on errors only
    std::uint8_t head[12] = {};
    std::size_t got = std::fread(head, 1, 8, m_file.get());
    if (got < 8 && std::ferror(m_file.get()) != 0) {
        return tl::unexpected(error("read error" + at() + ": " + errno_text(errno)));
    }
    if (got == 0) {
        return Got::end_of_file;
    }
    if (got < 8) {
        return tl::unexpected(error("truncated block header" + at()));
    }
    const wire::Bytes head_view(head);
    std::size_t head_len = 8;
    if (wire::be32(head_view, 0) == k_section_header) {
        // The section header block says which byte order the section uses; its type reads the same in both.
        if (std::fread(head + 8, 1, 4, m_file.get()) != 4) {
            return tl::unexpected(error("truncated section header block" + at()));
        }
        head_len = 12;
        const std::uint32_t magic = wire::be32(head_view, 8);
        if (magic == k_byte_order_magic) {
            m_big_endian = true;
        } else if (wire::u32(head_view, 8, false) == k_byte_order_magic) {
            m_big_endian = false;
        } else {
            return tl::unexpected(error("bad byte-order magic in the section header block" + at()));
        }
    }
    m_block_type = wire::u32(head_view, 0, m_big_endian);
    const std::uint32_t length = wire::u32(head_view, 4, m_big_endian);
    const std::size_t min_length = m_block_type == k_section_header ? k_min_section_header : k_min_block;
    if (length % 4 != 0 || length < min_length) {
        return tl::unexpected(error("invalid block length " + std::to_string(length) + at()));
    }
    if (m_size && (m_offset > *m_size || length > *m_size - m_offset)) {
        const std::uint64_t left = m_offset < *m_size ? *m_size - m_offset : 0;
        return tl::unexpected(error("truncated block" + at() + " (length " + std::to_string(length) + ", " +
                                    std::to_string(left) + " bytes left in the file)"));
    }
    if (length > k_max_block) {
        return tl::unexpected(error("implausible block length " + std::to_string(length) + at()));
    }
    m_block.resize(length);
    std::memcpy(m_block.data(), head, head_len);
    const std::size_t rest = length - head_len;
    if (std::fread(m_block.data() + head_len, 1, rest, m_file.get()) != rest) {
        if (std::ferror(m_file.get()) != 0) {
            return tl::unexpected(error("read error" + at() + ": " + errno_text(errno)));
        }
        return tl::unexpected(error("truncated block" + at() + " (length " + std::to_string(length) + ")"));
    }
    const std::uint32_t trailing = wire::u32(m_block, length - 4, m_big_endian);
    if (trailing != length) {
        return tl::unexpected(error("block" + at() + " has trailing length " + std::to_string(trailing) +
                                    " but leading length " + std::to_string(length)));
    }
    return Got::block;
}

template <typename F>
tl::expected<void, std::string> PcapngFile::for_each_option(std::size_t begin, std::size_t end,
                                                            std::string_view block_name, F f) {
    const wire::Bytes block(m_block);
    std::size_t pos = begin;
    while (pos < end) {
        if (end - pos < 4) {
            break;  // fewer bytes than an option header: padding some writers leave; nothing to read
        }
        const std::uint16_t code = wire::u16(block, pos, m_big_endian);
        const std::uint16_t length = wire::u16(block, pos + 2, m_big_endian);
        if (code == k_opt_end) {
            break;
        }
        if (padded4(length) > end - pos - 4) {
            return tl::unexpected(error("option " + std::to_string(code) + " runs past its " + std::string(block_name) +
                                        " block at offset " + std::to_string(m_offset)));
        }
        if (auto ok = f(code, block.subspan(pos + 4, length)); !ok) {
            return ok;
        }
        pos += 4 + padded4(length);
    }
    return {};
}

tl::expected<void, std::string> PcapngFile::section_header() {
    const wire::Bytes block(m_block);
    const std::uint16_t major = wire::u16(block, 12, m_big_endian);
    const std::uint16_t minor = wire::u16(block, 14, m_big_endian);
    // Only 1.0: a 1.1 (or 1.2) section may lay out its blocks differently, and libpcap and Wireshark refuse it too.
    if (major != 1 || minor != 0) {
        return tl::unexpected(m_path + ": unsupported pcapng version " + std::to_string(major) + "." +
                              std::to_string(minor) + " in the section header at offset " + std::to_string(m_offset) +
                              "; hoptrace reads version 1.0, as libpcap and Wireshark do");
    }
    // Interface ids in packet blocks count from 0 again in each section.
    m_section_first_interface = m_interfaces.size();
    return for_each_option(24, block.size() - 4, "section header",
                           [](std::uint16_t, wire::Bytes) -> tl::expected<void, std::string> { return {}; });
}

tl::expected<void, std::string> PcapngFile::interface_description() {
    const wire::Bytes block(m_block);
    if (block.size() < k_min_interface_description) {
        return tl::unexpected(error("interface description block too short at offset " + std::to_string(m_offset)));
    }
    FileInterface interface;
    interface.link_type = static_cast<LinkType>(wire::u16(block, 8, m_big_endian));
    interface.snaplen = wire::u32(block, 12, m_big_endian);
    Clock clock;
    auto ok = for_each_option(
        16, block.size() - 4, "interface description",
        [&](std::uint16_t code, wire::Bytes value) -> tl::expected<void, std::string> {
            switch (code) {
                case k_opt_if_name:
                    interface.name = option_string(value);
                    break;
                case k_opt_if_description:
                    interface.description = option_string(value);
                    break;
                case k_opt_if_tsresol: {
                    if (value.empty()) {
                        return tl::unexpected(error("empty if_tsresol option"));
                    }
                    clock.power_of_two = (value[0] & 0x80) != 0;
                    clock.exponent = value[0] & 0x7f;
                    // 10^19 is the largest power of ten a 64-bit count can divide by; 2^63 the largest power of two.
                    if ((!clock.power_of_two && clock.exponent > 19) || (clock.power_of_two && clock.exponent > 63)) {
                        return tl::unexpected(error("unsupported if_tsresol " + std::to_string(value[0])));
                    }
                    break;
                }
                case k_opt_if_tsoffset:
                    if (value.size() != 8) {
                        return tl::unexpected(
                            error("if_tsoffset option of " + std::to_string(value.size()) + " bytes"));
                    }
                    clock.offset_s = static_cast<std::int64_t>(wire::u64(value, 0, m_big_endian));
                    break;
                default:
                    break;
            }
            return {};
        });
    if (!ok) {
        return ok;
    }
    m_interfaces.push_back(std::move(interface));
    m_clocks.push_back(clock);
    return {};
}

tl::expected<void, std::string> PcapngFile::interface_statistics() {
    const wire::Bytes block(m_block);
    if (block.size() < k_min_interface_statistics) {
        return tl::unexpected(error("interface statistics block too short at offset " + std::to_string(m_offset)));
    }
    const std::size_t interface = m_section_first_interface + wire::u32(block, 8, m_big_endian);
    if (interface >= m_interfaces.size()) {
        return tl::unexpected(error("interface statistics block at offset " + std::to_string(m_offset) +
                                    " names interface " + std::to_string(wire::u32(block, 8, m_big_endian)) +
                                    ", which was never described"));
    }
    return for_each_option(20, block.size() - 4, "interface statistics",
                           [&](std::uint16_t code, wire::Bytes value) -> tl::expected<void, std::string> {
                               if (code == k_opt_isb_ifdrop && value.size() == 8)
                                   m_interfaces[interface].kernel_drops = wire::u64(value, 0, m_big_endian);
                               return {};
                           });
}

tl::expected<std::int64_t, std::string> PcapngFile::to_ns(const Clock& clock, std::uint64_t ts) const {
    Wide ns = 0;
    if (clock.power_of_two) {
        ns = (static_cast<Wide>(ts) * k_ns_per_s) >> clock.exponent;
    } else if (clock.exponent <= 9) {
        Wide scale = 1;
        for (int i = clock.exponent; i < 9; ++i) {
            scale *= 10;
        }
        ns = static_cast<Wide>(ts) * scale;
    } else {
        Wide scale = 1;
        for (int i = 9; i < clock.exponent; ++i) {
            scale *= 10;
        }
        ns = static_cast<Wide>(ts) / scale;
    }
    ns += static_cast<Wide>(clock.offset_s) * k_ns_per_s;
    if (ns > std::numeric_limits<std::int64_t>::max() || ns < std::numeric_limits<std::int64_t>::min()) {
        return tl::unexpected(
            error("timestamp out of range in the packet block at offset " + std::to_string(m_offset)));
    }
    return static_cast<std::int64_t>(ns);
}

tl::expected<void, std::string> PcapngFile::packet(FileFrame& out, bool obsolete) {
    const wire::Bytes block(m_block);
    auto at = [this] { return " at offset " + std::to_string(m_offset); };  // built on errors only
    if (block.size() < k_min_packet) {
        return tl::unexpected(error("packet block too short" + at()));
    }
    const std::uint32_t interface_id = obsolete ? wire::u16(block, 8, m_big_endian) : wire::u32(block, 8, m_big_endian);
    const std::uint64_t ts =
        (std::uint64_t{wire::u32(block, 12, m_big_endian)} << 32) | wire::u32(block, 16, m_big_endian);
    const std::uint32_t captured = wire::u32(block, 20, m_big_endian);
    const std::uint32_t original = wire::u32(block, 24, m_big_endian);
    const std::size_t body_end = block.size() - 4;
    if (captured > body_end - k_packet_data || padded4(captured) > body_end - k_packet_data) {
        return tl::unexpected(error("packet data (" + std::to_string(captured) + " bytes) runs past its block" + at()));
    }
    const std::size_t section_interfaces = m_interfaces.size() - m_section_first_interface;
    if (interface_id >= section_interfaces) {
        return tl::unexpected(error("packet block" + at() + " names interface " + std::to_string(interface_id) +
                                    ", but the section describes " + std::to_string(section_interfaces)));
    }
    const std::size_t index = m_section_first_interface + interface_id;
    const auto linktype = static_cast<std::uint32_t>(m_interfaces[index].link_type);
    const std::optional<LinkType> link_type = supported_link_type(linktype);
    if (!link_type) {
        return tl::unexpected(error(unsupported_link_type(linktype) + " on interface " + std::to_string(index)));
    }
    Direction direction = Direction::unknown;
    auto ok = for_each_option(k_packet_data + padded4(captured), body_end, "packet",
                              [&](std::uint16_t code, wire::Bytes value) -> tl::expected<void, std::string> {
                                  if (code == k_opt_epb_flags && value.size() == 4) {
                                      const std::uint32_t flags = wire::u32(value, 0, m_big_endian);
                                      if ((flags & 3) == 1) {
                                          direction = Direction::inbound;
                                      } else if ((flags & 3) == 2) {
                                          direction = Direction::outbound;
                                      }
                                  }
                                  return {};
                              });
    if (!ok) {
        return ok;
    }
    auto ts_ns = to_ns(m_clocks[index], ts);
    if (!ts_ns) {
        return tl::unexpected(ts_ns.error());
    }
    out.frame.ts_ns = *ts_ns;
    out.frame.wire_len = original;
    out.frame.link_type = *link_type;
    out.frame.direction = direction;
    out.frame.bytes = block.subspan(k_packet_data, captured);
    out.interface = static_cast<std::uint32_t>(index);
    return {};
}

}  // namespace hoptrace
