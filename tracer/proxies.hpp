#pragma once
// Docker's userland proxy: a docker-proxy process per published port (dockerd's default, --userland-proxy) accepts
// what reaches the host's port without being DNATed (from a container on the bridge, from the host itself through
// 127.0.0.1) and opens a second connection of its own to the container. Read from /proc: its command line says
// which port it relays to where.

#include "tracer/netns.hpp"

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hoptrace {

struct DockerProxy {
    pid_t pid = 0;
    std::string proto;    // tcp | udp | sctp
    std::string host_ip;  // 0.0.0.0 or :: for every address
    std::uint16_t host_port = 0;
    std::string container_ip;
    std::uint16_t container_port = 0;
};

// The docker-proxy processes whose network namespace is `host` (/proc/PID/ns/net), as their arguments name them
// (-proto -host-ip -host-port -container-ip -container-port). Processes that go away meanwhile are skipped.
std::vector<DockerProxy> docker_proxies(const Netns& host);

// One docker-proxy's arguments; false when they do not name a relay (not all five given, a port out of range).
bool parse_docker_proxy(const std::vector<std::string>& argv, DockerProxy& out);

}  // namespace hoptrace
