#pragma once
// Private to tracer/: classic pcap files, read through libpcap.

#include "tracer/capture_file.hpp"
#include "tracer/handles.hpp"

#include <pcap/pcap.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace {

class PcapFile final : public CaptureFile {
public:
    // `path` starts with a pcap magic number.
    static tl::expected<std::unique_ptr<CaptureFile>, std::string> open(const std::string& path);

    [[nodiscard]] const std::vector<FileInterface>& interfaces() const override { return m_interfaces; }
    tl::expected<bool, std::string> next(FileFrame& out) override;
    [[nodiscard]] std::uint64_t frames_read() const override { return m_frames; }

private:
    PcapFile(std::string path, PcapPtr pcap, LinkType link_type);

    std::string m_path;
    PcapPtr m_pcap;
    LinkType m_link_type;
    std::vector<FileInterface> m_interfaces;
    std::uint64_t m_frames = 0;
    std::optional<std::string> m_error;  // once an error is returned, next() keeps returning it
    bool m_ended = false;
};

}  // namespace hoptrace
