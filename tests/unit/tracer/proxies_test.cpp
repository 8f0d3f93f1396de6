// docker-proxy's command line (tracer/proxies.hpp), as dockerd 20.10 starts it (ps -o args of a real one in
// tests/e2e/docker_engine.py's engine: /usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080
// -container-ip 172.17.0.3 -container-port 80).

#include "tracer/proxies.hpp"

#include <gtest/gtest.h>

namespace hoptrace {
namespace {

TEST(DockerProxy, its_arguments_name_the_relay) {
    DockerProxy p;
    ASSERT_TRUE(parse_docker_proxy({"/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port",
                                    "8080", "-container-ip", "172.17.0.3", "-container-port", "80"},
                                   p));
    EXPECT_EQ(p.proto, "tcp");
    EXPECT_EQ(p.host_ip, "0.0.0.0");
    EXPECT_EQ(p.host_port, 8080);
    EXPECT_EQ(p.container_ip, "172.17.0.3");
    EXPECT_EQ(p.container_port, 80);
    // Newer engines spell the flags with two dashes and add -use-listen-fd.
    ASSERT_TRUE(parse_docker_proxy({"docker-proxy", "--proto", "udp", "--host-ip", "::", "--host-port", "53",
                                    "--container-ip", "fd00::2", "--container-port", "5353", "-use-listen-fd"},
                                   p));
    EXPECT_EQ(p.proto, "udp");
    EXPECT_EQ(p.container_port, 5353);
}

TEST(DockerProxy, anything_else_is_not_one) {
    DockerProxy p;
    EXPECT_FALSE(parse_docker_proxy({}, p));
    EXPECT_FALSE(parse_docker_proxy({"/usr/bin/sleep", "-proto", "tcp"}, p));
    EXPECT_FALSE(parse_docker_proxy({"docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080"}, p));
    EXPECT_FALSE(parse_docker_proxy({"docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "70000",
                                     "-container-ip", "172.17.0.3", "-container-port", "80"},
                                    p));
    EXPECT_FALSE(parse_docker_proxy({"docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080x",
                                     "-container-ip", "172.17.0.3", "-container-port", "80"},
                                    p));
}

}  // namespace
}  // namespace hoptrace
