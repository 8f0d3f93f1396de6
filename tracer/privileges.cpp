#include "tracer/privileges.hpp"

#include "tracer/errno_text.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <memory>

namespace hoptrace {
namespace {

struct CapFree {
    void operator()(cap_t caps) const noexcept { cap_free(caps); }
};
using CapPtr = std::unique_ptr<std::remove_pointer_t<cap_t>, CapFree>;

cap_value_t to_cap(Capability c) {
    switch (c) {
        case Capability::net_admin:
            return CAP_NET_ADMIN;
        case Capability::kill:
            return CAP_KILL;
        case Capability::dac_override:
            return CAP_DAC_OVERRIDE;
    }
    return CAP_NET_ADMIN;
}

std::optional<unsigned long> parse_id(const char* text) {
    if (text == nullptr || *text == '\0') return std::nullopt;
    unsigned long value = 0;
    const char* end = text + std::char_traits<char>::length(text);
    const auto [ptr, ec] = std::from_chars(text, end, value);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return value;
}

std::vector<gid_t> groups_of(const char* name, gid_t gid) {
    std::vector<gid_t> groups(32);
    int count = static_cast<int>(groups.size());
    if (name != nullptr && getgrouplist(name, gid, groups.data(), &count) < 0) {
        groups.resize(static_cast<std::size_t>(count));
        if (getgrouplist(name, gid, groups.data(), &count) < 0) count = 0;
    }
    if (name == nullptr) count = 0;
    groups.resize(static_cast<std::size_t>(count));
    if (groups.empty()) groups.push_back(gid);
    return groups;
}

}  // namespace

tl::expected<void, std::string> keep_only(std::initializer_list<Capability> keep) {
    CapPtr have(cap_get_proc());
    if (!have) return tl::unexpected(std::string("cannot read the thread's capabilities: ") + errno_text(errno));
    std::vector<cap_value_t> kept;
    for (const Capability c : keep) {
        cap_flag_value_t permitted = CAP_CLEAR;
        if (cap_get_flag(have.get(), to_cap(c), CAP_PERMITTED, &permitted) == 0 && permitted == CAP_SET)
            kept.push_back(to_cap(c));
    }
    CapPtr want(cap_init());  // everything clear
    if (!want) return tl::unexpected(std::string("cannot make a capability set: ") + errno_text(errno));
    if (!kept.empty()) {
        const int n = static_cast<int>(kept.size());
        if (cap_set_flag(want.get(), CAP_EFFECTIVE, n, kept.data(), CAP_SET) != 0 ||
            cap_set_flag(want.get(), CAP_PERMITTED, n, kept.data(), CAP_SET) != 0)
            return tl::unexpected(std::string("cannot make a capability set: ") + errno_text(errno));
    }
    static_cast<void>(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    if (cap_set_proc(want.get()) != 0)
        return tl::unexpected(std::string("cannot drop capabilities: ") + errno_text(errno));
    return {};
}

void drop_all_capabilities() noexcept {
    try {
        static_cast<void>(keep_only({}));
    } catch (...) {  // NOLINT(bugprone-empty-catch): only allocation can throw; keeping a capability is not a failure
    }
}

tl::expected<std::optional<RunAs>, std::string> command_user(const std::string& user) {
    if (!user.empty()) {
        const passwd* pw = nullptr;
        if (const auto uid = parse_id(user.c_str())) pw = getpwuid(static_cast<uid_t>(*uid));
        else pw = getpwnam(user.c_str());
        if (pw == nullptr) {
            if (const auto uid = parse_id(user.c_str()))  // a uid without a passwd entry: its own group
                return RunAs{static_cast<uid_t>(*uid), static_cast<gid_t>(*uid), {static_cast<gid_t>(*uid)}, user};
            return tl::unexpected("--user '" + user + "': no such user (give a user name or a numeric uid)");
        }
        return RunAs{pw->pw_uid, pw->pw_gid, groups_of(pw->pw_name, pw->pw_gid), pw->pw_name};
    }
    if (geteuid() != 0) return std::optional<RunAs>{};
    const auto uid = parse_id(std::getenv("SUDO_UID"));
    const auto gid = parse_id(std::getenv("SUDO_GID"));
    if (!uid || !gid || *uid == 0) return std::optional<RunAs>{};
    const char* name = std::getenv("SUDO_USER");
    RunAs who{static_cast<uid_t>(*uid), static_cast<gid_t>(*gid), {}, name != nullptr ? name : std::to_string(*uid)};
    who.groups = groups_of(name, who.gid);
    return who;
}

int become(const RunAs& who) noexcept {
    if (setgroups(who.groups.size(), who.groups.data()) != 0) return errno;
    if (setgid(who.gid) != 0) return errno;
    if (setuid(who.uid) != 0) return errno;
    return 0;
}

}  // namespace hoptrace
