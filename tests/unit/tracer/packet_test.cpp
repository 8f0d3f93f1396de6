#include "tracer/packet.hpp"

#include <gtest/gtest.h>

#include <array>

namespace hoptrace {
namespace {

TEST(IpAddr, parses_and_prints_ipv4) {
    const auto a = IpAddr::parse("172.17.0.2");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->family, 4);
    EXPECT_EQ(a->bytes[0], 172);
    EXPECT_EQ(a->bytes[3], 2);
    EXPECT_EQ(a->bytes[4], 0);  // the rest stays zero
    EXPECT_EQ(a->to_string(), "172.17.0.2");
}

TEST(IpAddr, parses_and_prints_ipv6_in_canonical_form) {
    const auto a = IpAddr::parse("2001:0db8:0:0:0:0:0:1");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->family, 6);
    EXPECT_EQ(a->to_string(), "2001:db8::1");
    EXPECT_EQ(IpAddr::parse("::ffff:10.0.0.1")->to_string(), "::ffff:10.0.0.1");
}

TEST(IpAddr, rejects_what_is_not_an_address) {
    EXPECT_FALSE(IpAddr::parse(""));
    EXPECT_FALSE(IpAddr::parse("10.0.0"));
    EXPECT_FALSE(IpAddr::parse("10.0.0.256"));
    EXPECT_FALSE(IpAddr::parse("fe80::1%eth0"));
    EXPECT_FALSE(IpAddr::parse("host.example"));
    EXPECT_FALSE(IpAddr::parse(std::string_view("1.2.3.4\0junk", 12)));
}

TEST(IpAddr, empty_address_prints_as_empty_string) {
    const IpAddr none;
    EXPECT_TRUE(none.empty());
    EXPECT_EQ(none.to_string(), "");
}

TEST(IpAddr, builds_from_bytes_and_orders_by_family_then_bytes) {
    const std::array<std::uint8_t, 4> v4{10, 99, 0, 1};
    std::array<std::uint8_t, 16> v6{};
    v6[0] = 0xfd;
    v6[15] = 1;
    const IpAddr a = IpAddr::v4(v4);
    const IpAddr b = IpAddr::v6(v6);
    EXPECT_EQ(a.to_string(), "10.99.0.1");
    EXPECT_EQ(b.to_string(), "fd00::1");
    EXPECT_EQ(a, *IpAddr::parse("10.99.0.1"));
    EXPECT_LT(a, b);
}

TEST(Direction, strings_stored_in_the_database) {
    EXPECT_EQ(to_string(Direction::inbound), "in");
    EXPECT_EQ(to_string(Direction::outbound), "out");
    EXPECT_EQ(to_string(Direction::unknown), "");
}

}  // namespace
}  // namespace hoptrace
