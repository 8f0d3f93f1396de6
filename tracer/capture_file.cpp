#include "tracer/capture_file.hpp"
#include "tracer/errno_text.hpp"

#include "tracer/capture_source.hpp"
#include "tracer/pcap_file.hpp"
#include "tracer/pcapng_file.hpp"

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <system_error>

namespace hoptrace {

std::optional<LinkType> supported_link_type(std::uint32_t linktype) noexcept {
    switch (static_cast<LinkType>(linktype)) {
        case LinkType::ethernet:
        case LinkType::raw:
        case LinkType::linux_sll:
        case LinkType::ipv4:
        case LinkType::ipv6:
        case LinkType::linux_sll2:
            return static_cast<LinkType>(linktype);
    }
    return std::nullopt;
}

std::string unsupported_link_type(std::uint32_t linktype) {
    return "unsupported link type " + std::to_string(linktype) + " (supported: Ethernet, Linux cooked v1/v2, raw IP)";
}

namespace {

constexpr std::size_t k_stdio_buffer = std::size_t{256} * 1024;

bool is_pcap_magic(std::uint32_t magic) noexcept {
    switch (magic) {
        case 0xa1b2c3d4:  // microseconds
        case 0xd4c3b2a1:
        case 0xa1b23c4d:  // nanoseconds
        case 0x4d3cb2a1:
        case 0xa1b2cd34:  // Alexey Kuznetsov's patched format, which libpcap also reads
        case 0x34cdb2a1:
            return true;
        default:
            return false;
    }
}

constexpr std::uint32_t k_pcapng_magic = 0x0a0d0d0a;  // the section header block type, a palindrome

}  // namespace

tl::expected<std::unique_ptr<CaptureFile>, std::string> CaptureFile::open(const std::string& path) {
    FilePtr file(std::fopen(path.c_str(), "rb"));
    if (!file) {
        return tl::unexpected(path + ": " + errno_text(errno));
    }
    struct stat st {};
    if (fstat(fileno(file.get()), &st) != 0) {
        return tl::unexpected(path + ": " + errno_text(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        return tl::unexpected(path + ": " + std::generic_category().message(EISDIR));
    }
    std::setvbuf(file.get(), nullptr, _IOFBF, k_stdio_buffer);

    std::array<unsigned char, 4> head{};
    const std::size_t got = std::fread(head.data(), 1, head.size(), file.get());
    if (got < head.size() && std::ferror(file.get()) != 0) {
        return tl::unexpected(path + ": " + errno_text(errno));
    }
    if (got == 0) {
        return tl::unexpected(path + ": empty file");
    }
    const std::uint32_t magic = (std::uint32_t{head[0]} << 24) | (std::uint32_t{head[1]} << 16) |
                                (std::uint32_t{head[2]} << 8) | std::uint32_t{head[3]};
    if (got == head.size() && is_pcap_magic(magic)) {
        file.reset();  // libpcap opens the file itself
        return PcapFile::open(path);
    }
    if (got == head.size() && magic == k_pcapng_magic) {
        std::rewind(file.get());
        return PcapngFile::open(path, std::move(file),
                                S_ISREG(st.st_mode) ? std::optional<std::uint64_t>(st.st_size) : std::nullopt);
    }
    return tl::unexpected(path + ": not a pcap or pcapng file");
}

}  // namespace hoptrace
