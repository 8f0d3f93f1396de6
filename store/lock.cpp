#include "store/lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tracer/errno_text.hpp"

#include <cerrno>
#include <string>

namespace hoptrace::store {

tl::expected<WriterLock, std::string> WriterLock::acquire(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const int error = errno;
        struct stat st {};
        if ((error == EACCES || error == EPERM) && ::stat(path.c_str(), &st) == 0 && st.st_uid != ::geteuid()) {
            // Our files are 0600 (they hold whole conversations): most often a capture made with sudo.
            return tl::unexpected(path + ": permission denied: the file belongs to uid " + std::to_string(st.st_uid) +
                                  "; run hoptrace as that user (or with sudo), or give another --db");
        }
        return tl::unexpected(path + ": cannot open it: " + errno_text(error));
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        const int error = errno;
        if (error == EWOULDBLOCK)
            return tl::unexpected(path +
                                  ": another hoptrace (a running capture, import or correlate) is writing it; "
                                  "wait until it has finished, or use another --db (nothing was changed)");
        return tl::unexpected(path + ": cannot lock it: " + errno_text(error));
    }
    return WriterLock(std::move(fd));
}

}  // namespace hoptrace::store
