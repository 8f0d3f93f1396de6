#include "tracer/pcap_file.hpp"

#include "tracer/capture_source.hpp"

#include <array>
#include <string_view>

namespace hoptrace {
namespace {

constexpr std::int64_t k_ns_per_s = 1'000'000'000;

// libpcap hands out DLT_* values, which differ from the LINKTYPE_* numbers in the file for a few types
// (raw IP above all: LINKTYPE_RAW 101 is DLT_RAW 12 on Linux, 14 on OpenBSD).
std::optional<LinkType> link_type_of_dlt(int dlt) noexcept {
    switch (dlt) {
        case DLT_EN10MB:
            return LinkType::ethernet;
        case 12:  // DLT_RAW on most systems
        case 14:  // DLT_RAW on OpenBSD
            return LinkType::raw;
        case DLT_LINUX_SLL:
            return LinkType::linux_sll;
        case DLT_LINUX_SLL2:
            return LinkType::linux_sll2;
        case DLT_IPV4:
            return LinkType::ipv4;
        case DLT_IPV6:
            return LinkType::ipv6;
        default:
            return std::nullopt;
    }
}

bool starts_with(std::string_view text, std::string_view prefix) noexcept {
    return text.substr(0, prefix.size()) == prefix;
}

}  // namespace

tl::expected<std::unique_ptr<CaptureFile>, std::string> PcapFile::open(const std::string& path) {
    std::array<char, PCAP_ERRBUF_SIZE> errbuf{};
    PcapPtr pcap(pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf.data()));
    if (!pcap) {
        const std::string_view message(errbuf.data());
        if (starts_with(message, "truncated dump file")) {
            return tl::unexpected(path + ": truncated pcap file header");
        }
        return tl::unexpected(path + ": " + std::string(message));
    }
    const int dlt = pcap_datalink(pcap.get());
    const std::optional<LinkType> link_type = link_type_of_dlt(dlt);
    if (!link_type) {
        return tl::unexpected(path + ": " + unsupported_link_type(static_cast<std::uint32_t>(dlt)));
    }
    return std::unique_ptr<CaptureFile>(new PcapFile(path, std::move(pcap), *link_type));
}

PcapFile::PcapFile(std::string path, PcapPtr pcap, LinkType link_type)
    : m_path(std::move(path)), m_pcap(std::move(pcap)), m_link_type(link_type) {
    FileInterface interface;
    interface.link_type = link_type;
    interface.snaplen = static_cast<std::uint32_t>(pcap_snapshot(m_pcap.get()));
    m_interfaces.push_back(interface);
}

tl::expected<bool, std::string> PcapFile::next(FileFrame& out) {
    if (m_error) {
        return tl::unexpected(*m_error);
    }
    if (m_ended) {
        return false;
    }
    pcap_pkthdr* header = nullptr;
    const u_char* data = nullptr;
    const int rc = pcap_next_ex(m_pcap.get(), &header, &data);
    if (rc == 1) {
        ++m_frames;
        // With nanosecond precision requested, libpcap scales microsecond files and tv_usec holds ns. A classic
        // pcap record's seconds are an unsigned 32-bit field (until 2106), which libpcap reads as a signed one and
        // sign-extends into tv_sec: from 2038-01-19 03:14:08 UTC on, a time would come out as one between 1901 and
        // 1970 (and a negative ts_ns, which no export can write). Its low 32 bits are the field.
        const auto seconds = static_cast<std::uint32_t>(header->ts.tv_sec);
        out.frame.ts_ns =
            static_cast<std::int64_t>(seconds) * k_ns_per_s + static_cast<std::int64_t>(header->ts.tv_usec);
        out.frame.wire_len = header->len;
        out.frame.link_type = m_link_type;
        out.frame.direction = Direction::unknown;
        out.frame.bytes = std::span<const std::uint8_t>(data, header->caplen);
        out.interface = 0;
        return true;
    }
    if (rc == PCAP_ERROR_BREAK) {
        m_ended = true;
        return false;
    }
    const std::string message =
        rc == PCAP_ERROR ? pcap_geterr(m_pcap.get()) : "pcap_next_ex returned " + std::to_string(rc);
    const std::string after = " after " + std::to_string(m_frames) + " packets";
    if (starts_with(message, "truncated dump file")) {
        m_error = m_path + ": truncated packet record" + after;
    } else {
        m_error = m_path + ": corrupt packet record" + after + " (" + message + ")";
    }
    return tl::unexpected(*m_error);
}

}  // namespace hoptrace
