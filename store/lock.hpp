#pragma once
// One writer at a time: the commands that write a database (capture, import, correlate) hold an exclusive flock on
// the database file for as long as they have it open, and take it before they write anything. A second writer is
// refused at once with one line naming the file, instead of interleaving its points with a running capture's.
// Readers (report, export) take no lock: SQLite's own locking keeps what they read consistent.
//
// The lock is an flock(2) on a descriptor of its own. SQLite's locks are POSIX record locks, which a process loses
// when it closes *any* descriptor of the file: so a WriterLock must stay open until the Database on that file is
// closed (declare it before the Database).

#include "tracer/handles.hpp"

#include <tl/expected.hpp>

#include <string>

namespace hoptrace::store {

class WriterLock {
public:
    WriterLock() = default;  // holds nothing
    // Takes the lock on the existing file `path`, without waiting. The error is one line naming `path`.
    static tl::expected<WriterLock, std::string> acquire(const std::string& path);

    [[nodiscard]] bool held() const noexcept { return static_cast<bool>(m_fd); }

private:
    explicit WriterLock(UniqueFd fd) : m_fd(std::move(fd)) {}
    UniqueFd m_fd;
};

}  // namespace hoptrace::store
