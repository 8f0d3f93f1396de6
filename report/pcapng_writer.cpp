#include "report/pcapng_writer.hpp"
#include "tracer/errno_text.hpp"
#include "tracer/pcapng_format.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

namespace hoptrace::report {
namespace {

using namespace pcapng;  // NOLINT(google-build-using-namespace): the format's numbers, unqualified

constexpr std::uint8_t k_tsresol_nanoseconds = 9;  // 10^-9 s

constexpr std::size_t k_buffer_size = std::size_t{1} << 20;
constexpr std::size_t k_max_option = 0xFFFC;  // an option's length is 16 bits; keep it a multiple of 4

constexpr std::size_t padded(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

// Appends by resize + memcpy: GCC 12 warns (-Wstringop-overflow, a false positive) about vector::insert of a
// small array right after clear() once it inlines everything in a Release build.
void put_raw(std::vector<std::uint8_t>& out, const void* bytes, std::size_t n) {
    const std::size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, bytes, n);
}

void put_u16(std::vector<std::uint8_t>& out, std::uint16_t v) { put_raw(out, &v, sizeof v); }

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) { put_raw(out, &v, sizeof v); }

void set_u32(std::vector<std::uint8_t>& out, std::size_t at, std::uint32_t v) { std::memcpy(out.data() + at, &v, 4); }

void pad(std::vector<std::uint8_t>& out) { out.resize(padded(out.size()), 0); }

// At most `max` bytes of `text`, cut at a UTF-8 character boundary.
std::string_view utf8_prefix(std::string_view text, std::size_t max) {
    if (text.size() <= max) return text;
    std::size_t n = max;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
    return text.substr(0, n);
}

void put_option(std::vector<std::uint8_t>& out, std::uint16_t code, std::span<const std::uint8_t> value) {
    put_u16(out, code);
    put_u16(out, static_cast<std::uint16_t>(value.size()));
    out.insert(out.end(), value.begin(), value.end());
    pad(out);
}

void put_option(std::vector<std::uint8_t>& out, std::uint16_t code, std::string_view text) {
    const std::string_view v = utf8_prefix(text, k_max_option);
    // NOLINTNEXTLINE(bugprone-suspicious-stringview-data-usage): the span carries the length
    put_option(out, code, std::span(reinterpret_cast<const std::uint8_t*>(v.data()), v.size()));
}

void put_end_of_options(std::vector<std::uint8_t>& out) {
    put_u16(out, k_opt_end);
    put_u16(out, 0);
}

// Starts a block in `out`: type and a placeholder for the total length, filled in by finish_block().
void start_block(std::vector<std::uint8_t>& out, std::uint32_t type) {
    out.clear();
    put_u32(out, type);
    put_u32(out, 0);
}

void finish_block(std::vector<std::uint8_t>& out) {
    const auto total = static_cast<std::uint32_t>(out.size() + 4);
    set_u32(out, 4, total);
    put_u32(out, total);
}

}  // namespace

PcapngWriter::PcapngWriter(std::string path, FilePtr file, std::unique_ptr<char[]> buffer, bool regular)
    : m_path(std::move(path)), m_buffer(std::move(buffer)), m_file(std::move(file)), m_regular(regular) {}

PcapngWriter::~PcapngWriter() { discard(); }

void PcapngWriter::discard() noexcept {
    if (!m_file) return;
    m_file.reset();
    if (m_regular) ::unlink(m_path.c_str());
}

tl::expected<PcapngWriter, std::string> PcapngWriter::create(const std::string& path, const PcapngSection& section) {
    FilePtr file(std::fopen(path.c_str(), "wb"));
    if (!file) return tl::unexpected(std::string(path).append(": cannot create: ").append(errno_text(errno)));
    struct stat st {};
    const bool regular = ::fstat(::fileno(file.get()), &st) == 0 && S_ISREG(st.st_mode);
    auto buffer = std::make_unique<char[]>(k_buffer_size);
    if (std::setvbuf(file.get(), buffer.get(), _IOFBF, k_buffer_size) != 0) {
        if (regular) ::unlink(path.c_str());
        return tl::unexpected(std::string(path).append(": cannot set up the output buffer"));
    }
    PcapngWriter w(path, std::move(file), std::move(buffer), regular);

    auto& b = w.m_block;
    start_block(b, k_section_header);
    put_u32(b, k_byte_order_magic);
    put_u16(b, 1);  // version 1.0
    put_u16(b, 0);
    put_u32(b, 0xFFFFFFFF);  // section length: not given (-1)
    put_u32(b, 0xFFFFFFFF);
    if (!section.comment.empty()) put_option(b, k_opt_comment, section.comment);
    if (!section.application.empty()) put_option(b, k_opt_shb_userappl, section.application);
    put_end_of_options(b);
    finish_block(b);
    if (auto ok = w.put_block(); !ok) return tl::unexpected(ok.error());
    return w;
}

tl::expected<std::uint32_t, std::string> PcapngWriter::add_interface(const PcapngInterface& interface) {
    if (m_error) return tl::unexpected(*m_error);
    auto& b = m_block;
    start_block(b, k_interface_description);
    put_u16(b, interface.link_type);
    put_u16(b, 0);  // reserved
    put_u32(b, interface.snaplen);
    if (!interface.name.empty()) put_option(b, k_opt_if_name, interface.name);
    if (!interface.description.empty()) put_option(b, k_opt_if_description, interface.description);
    const std::uint8_t tsresol = k_tsresol_nanoseconds;
    put_option(b, k_opt_if_tsresol, std::span(&tsresol, 1));
    put_end_of_options(b);
    finish_block(b);
    if (auto ok = put_block(); !ok) return tl::unexpected(ok.error());
    return m_interfaces++;
}

tl::expected<void, std::string> PcapngWriter::write_statistics(std::uint32_t interface, std::int64_t ts_ns,
                                                               std::uint64_t kernel_drops) {
    if (m_error) return tl::unexpected(*m_error);
    if (interface >= m_interfaces) {
        return fail("statistics for interface " + std::to_string(interface) + ", but only " +
                    std::to_string(m_interfaces) + " are described");
    }
    const auto ts = static_cast<std::uint64_t>(std::max<std::int64_t>(ts_ns, 0));
    auto& b = m_block;
    start_block(b, k_interface_statistics);
    put_u32(b, interface);
    put_u32(b, static_cast<std::uint32_t>(ts >> 32));
    put_u32(b, static_cast<std::uint32_t>(ts & 0xFFFFFFFFU));
    std::array<std::uint8_t, 8> drops{};
    std::memcpy(drops.data(), &kernel_drops, drops.size());
    put_option(b, k_opt_isb_ifdrop, drops);
    put_end_of_options(b);
    finish_block(b);
    return put_block();
}

tl::expected<void, std::string> PcapngWriter::write(const PcapngPacket& packet) {
    if (m_error) return tl::unexpected(*m_error);
    auto which = [this] { return std::string("packet ").append(std::to_string(m_packets + 1)); };
    if (packet.interface >= m_interfaces) {
        return fail(which()
                        .append(" is on interface ")
                        .append(std::to_string(packet.interface))
                        .append(", but only ")
                        .append(std::to_string(m_interfaces))
                        .append(" are described"));
    }
    if (packet.ts_ns < 0) return fail(which().append(": timestamp before 1970"));
    const std::size_t cap_len = packet.bytes.size();

    // Options and the trailing length are assembled here (they start 4-byte aligned, after the frame's
    // padding); the frame bytes go straight from the caller's buffer to the stream.
    const std::size_t padding = padded(cap_len) - cap_len;
    auto& tail = m_block;
    tail.clear();
    const bool has_flags = packet.direction != Direction::unknown;
    if (!packet.comment.empty()) put_option(tail, k_opt_comment, packet.comment);
    if (has_flags) {
        std::array<std::uint8_t, 4> flags{};
        const std::uint32_t v = packet.direction == Direction::inbound ? k_epb_inbound : k_epb_outbound;
        std::memcpy(flags.data(), &v, flags.size());
        put_option(tail, k_opt_epb_flags, flags);
    }
    if (!packet.comment.empty() || has_flags) put_end_of_options(tail);
    constexpr std::size_t k_head = 28;  // type, length, interface, timestamp (2), captured and original length
    const std::size_t total = k_head + cap_len + padding + tail.size() + 4;
    if (total > 0xFFFFFFFFULL) return fail(which().append(": frame too large for a pcapng block"));
    put_u32(tail, static_cast<std::uint32_t>(total));

    const auto ts = static_cast<std::uint64_t>(packet.ts_ns);
    const std::array<std::uint32_t, 7> head{k_enhanced_packet,
                                            static_cast<std::uint32_t>(total),
                                            packet.interface,
                                            static_cast<std::uint32_t>(ts >> 32),
                                            static_cast<std::uint32_t>(ts & 0xFFFFFFFFU),
                                            static_cast<std::uint32_t>(cap_len),
                                            std::max(packet.wire_len, static_cast<std::uint32_t>(cap_len))};
    static_assert(sizeof head == k_head);

    if (auto ok = put(head.data(), sizeof head); !ok) return ok;
    if (auto ok = put(packet.bytes.data(), cap_len); !ok) return ok;
    constexpr std::array<std::uint8_t, 3> k_zeros{};
    if (auto ok = put(k_zeros.data(), padding); !ok) return ok;
    if (auto ok = put(tail.data(), tail.size()); !ok) return ok;
    ++m_packets;
    return {};
}

tl::expected<void, std::string> PcapngWriter::finish() {
    if (m_error) return tl::unexpected(*m_error);
    if (!m_file) return tl::unexpected(std::string(m_path).append(": already closed"));
    if (std::fflush(m_file.get()) != 0) return fail(std::string("write failed: ").append(errno_text(errno)));
    std::FILE* f = m_file.release();
    if (std::fclose(f) != 0) {
        const int err = errno;
        if (m_regular) ::unlink(m_path.c_str());
        m_error = std::string(m_path).append(": write failed: ").append(errno_text(err));
        return tl::unexpected(*m_error);
    }
    return {};
}

tl::expected<void, std::string> PcapngWriter::put(const void* data, std::size_t size) {
    if (size == 0) return {};
    if (std::fwrite(data, 1, size, m_file.get()) != size) {
        return fail(std::string("write failed: ").append(errno_text(errno)));
    }
    return {};
}

tl::expected<void, std::string> PcapngWriter::put_block() { return put(m_block.data(), m_block.size()); }

tl::expected<void, std::string> PcapngWriter::fail(const std::string& what) {
    m_error = std::string(m_path).append(": ").append(what);
    discard();
    return tl::unexpected(*m_error);
}

}  // namespace hoptrace::report
