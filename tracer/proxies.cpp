#include "tracer/proxies.hpp"

#include "tracer/handles.hpp"

#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <string_view>

namespace hoptrace {
namespace {

std::vector<std::string> cmdline(const std::filesystem::path& proc) {
    std::string all;
    if (FilePtr f{std::fopen((proc / "cmdline").c_str(), "rb")}) {
        char buf[4096];
        for (std::size_t n = 0; (n = std::fread(buf, 1, sizeof buf, f.get())) > 0 && all.size() < (1U << 20);)
            all.append(buf, n);
    }
    std::vector<std::string> argv;
    std::size_t start = 0;
    while (start < all.size()) {
        const auto end = std::min(all.find('\0', start), all.size());
        argv.push_back(all.substr(start, end - start));
        start = end + 1;
    }
    return argv;
}

bool port_of(const std::string& text, std::uint16_t& port) {
    unsigned value = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || value == 0 || value > 65535) return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

}  // namespace

bool parse_docker_proxy(const std::vector<std::string>& argv, DockerProxy& out) {
    if (argv.empty() || std::filesystem::path(argv[0]).filename() != "docker-proxy") return false;
    DockerProxy p;
    bool host_port = false;
    bool container_port = false;
    for (std::size_t i = 1; i + 1 < argv.size(); ++i) {
        std::string_view flag = argv[i];
        if (flag.starts_with("--")) flag.remove_prefix(1);
        const std::string& value = argv[i + 1];
        if (flag == "-proto") p.proto = value, ++i;
        else if (flag == "-host-ip") p.host_ip = value, ++i;
        else if (flag == "-host-port") host_port = port_of(value, p.host_port), ++i;
        else if (flag == "-container-ip") p.container_ip = value, ++i;
        else if (flag == "-container-port") container_port = port_of(value, p.container_port), ++i;
    }
    if (p.proto.empty() || p.host_ip.empty() || p.container_ip.empty() || !host_port || !container_port) return false;
    out = std::move(p);
    return true;
}

std::vector<DockerProxy> docker_proxies(const Netns& host) {
    std::vector<DockerProxy> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        pid_t pid = 0;
        const auto [ptr, bad] = std::from_chars(name.data(), name.data() + name.size(), pid);
        if (bad != std::errc() || ptr != name.data() + name.size()) continue;
        DockerProxy p;
        if (!parse_docker_proxy(cmdline(entry.path()), p)) continue;
        struct stat ns {};
        if (::stat((entry.path() / "ns" / "net").c_str(), &ns) != 0 || ns.st_ino != host.inode()) continue;
        p.pid = pid;
        out.push_back(std::move(p));
    }
    return out;
}

}  // namespace hoptrace
