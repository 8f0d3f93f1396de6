#pragma once
// The files that hold captured packets (the database with its -wal and -shm, the capture spool) hold whole
// conversations of the host's traffic: hoptrace creates them mode 0600, exclusively (O_EXCL), and never through a
// symbolic link, which someone else may have planted beside the database to make a root process create or
// truncate the file it points to. SQLite gives FILE-wal and FILE-shm the mode of FILE, so creating FILE 0600
// before SQLite opens it is enough for those two.

#include "tracer/handles.hpp"

#include <tl/expected.hpp>

#include <optional>
#include <string>

namespace hoptrace::store {

// Creates `path` as an empty file, mode 0600, unless something of that name exists: returns true when this call
// created it, false when it was there (a database to add to). A dangling symbolic link is an error (we would
// create the file it points to), as is any failure to create; the message is one line naming `path`.
tl::expected<bool, std::string> create_private_file(const std::string& path);

// Opens `path` for writing, for a file only this process writes (the capture spool): created O_EXCL|O_NOFOLLOW,
// mode 0600. A file of that name left behind (a crash) is reused only when it is a regular file owned by this
// user with no other link to it (and is then set to mode 0600); a symbolic link, a FIFO, a device or somebody
// else's file is refused. The caller truncates it (after locking it). Errors are one line naming `path`.
tl::expected<UniqueFd, std::string> open_private_for_writing(const std::string& path);

// Why `path` cannot be opened when it is another user's file (most often a capture made with sudo, 0600 and root's,
// opened without it): one line naming `path`, its owner and what to do. nullopt when `error` is not EACCES/EPERM or
// the file is this user's (then errno's own text says it better).
[[nodiscard]] std::optional<std::string> not_yours(const std::string& path, int error);

}  // namespace hoptrace::store
