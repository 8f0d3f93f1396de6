#pragma once
// Least privilege for a capture that runs as root. Linux capabilities belong to a thread, not to the process:
// each thread drops what it does not need itself, once it has opened what needed them.
//   - a point's capture thread: nothing, once its libpcap handle is open (reading a packet socket needs none);
//   - the spool and writer threads: nothing, ever (they write files already open);
//   - the main thread: what it still needs at each stage (docs/cli.md, "Privileges").
// And the command a capture runs (`-- CMD`) runs as the user who ran sudo, or as --user USER.

#include <sys/types.h>

#include <tl/expected.hpp>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace {

// The capabilities a thread may keep (a subset of Linux's, by what hoptrace uses them for).
enum class Capability {
    net_admin,     // conntrack dumps (netlink), namespaces' interfaces
    kill,          // signalling the command, which runs as another user
    dac_override,  // the database's directory may belong to another user (removing the spool, SQLite's -wal)
};

// Keeps only `keep` (those of them the thread has) in the calling thread's effective and permitted sets, and
// clears its inheritable and ambient sets. Never raises anything. The error is one line.
tl::expected<void, std::string> keep_only(std::initializer_list<Capability> keep);
// keep_only({}): for threads that need nothing.
void drop_all_capabilities() noexcept;

// Who runs the command of a capture.
struct RunAs {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups
    std::string name;           // for messages
};
// `user` (--user: a name or a numeric uid) when given; else the user who ran sudo (SUDO_UID, SUDO_GID) when hoptrace
// runs as root through sudo; else nullopt (the command runs as hoptrace does). The error is one line naming it.
tl::expected<std::optional<RunAs>, std::string> command_user(const std::string& user);
// In a child process before exec: becomes `who` (groups, gid, uid: every capability is gone after). Returns the
// errno of the step that failed, or 0.
int become(const RunAs& who) noexcept;

}  // namespace hoptrace
