// Container names: what is passed to `docker inspect` (after a "--") must look like a name or id to Docker.
// Docker's own rule for names is [a-zA-Z0-9][a-zA-Z0-9_.-]* (daemon/names: validContainerNamePattern), and
// `docker inspect` prints them with a leading '/'.

#include "tracer/netns.hpp"

#include <gtest/gtest.h>

namespace hoptrace {
namespace {

TEST(ContainerName, names_and_ids_docker_accepts) {
    for (const char* name : {"web", "/web", "my_app.1-2", "0f3a9c2e1b4d", "A", "x.y", "c1"}) {
        EXPECT_TRUE(is_container_name(name)) << name;
    }
}

TEST(ContainerName, options_and_other_text_are_refused) {
    for (const char* name : {"", "/", "//web", "--format={{.Name}}", "-f", "-", ".hidden", "_x", "a b", "a/b", "a;b",
                             "a\nb", "web\n", "über", "a=b", "$(id)"}) {
        EXPECT_FALSE(is_container_name(name)) << name;
    }
}

TEST(ContainerName, a_refused_name_is_refused_before_docker_runs) {
    // resolve() never gets to run docker or podman: the answer is the one line naming the option.
    const auto ns = resolve({Target::Kind::container, "--format=x"});
    ASSERT_FALSE(ns);
    EXPECT_EQ(ns.error(), container_name_error("--format=x"));
    EXPECT_NE(ns.error().find("--container '--format=x'"), std::string::npos) << ns.error();
}

}  // namespace
}  // namespace hoptrace
