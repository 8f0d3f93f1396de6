#include "store/lock.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include "store/private_file.hpp"
#include "tracer/errno_text.hpp"

#include <cerrno>
#include <string>

namespace hoptrace::store {

tl::expected<WriterLock, std::string> WriterLock::acquire(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const int error = errno;
        if (auto line = not_yours(path, error)) return tl::unexpected(std::move(*line));
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
