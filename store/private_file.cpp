#include "store/private_file.hpp"
#include "tracer/errno_text.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hoptrace::store {

namespace {

constexpr mode_t k_private_mode = S_IRUSR | S_IWUSR;  // 0600

}  // namespace

tl::expected<bool, std::string> create_private_file(const std::string& path) {
    // O_EXCL never follows a symbolic link, dangling or not: it fails with EEXIST instead.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, k_private_mode));
    if (fd) {
        return true;
    }
    const int error = errno;
    if (error != EEXIST) {
        return tl::unexpected(path + ": cannot create it: " + errno_text(error));
    }
    struct stat link {};
    struct stat target {};
    if (::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode) && ::stat(path.c_str(), &target) != 0 &&
        errno == ENOENT) {
        return tl::unexpected(path +
                              ": a symbolic link to a file that does not exist; hoptrace does not create a "
                              "file through a link: remove the link or give the path of the file itself");
    }
    return false;
}

tl::expected<UniqueFd, std::string> open_private_for_writing(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, k_private_mode));
    if (fd) {
        return fd;
    }
    if (const int error = errno; error != EEXIST) {
        return tl::unexpected(path + ": cannot create it: " + errno_text(error));
    }
    // A leftover. Look before opening: opening a FIFO or a device can block or act on the device.
    const std::string refuse = path + ": exists and is not a file this hoptrace left behind (";
    const std::string what = "); remove it, or give the database another name";
    struct stat before {};
    if (::lstat(path.c_str(), &before) != 0) {
        const int error = errno;
        return tl::unexpected(path + ": cannot stat it: " + errno_text(error));
    }
    if (S_ISLNK(before.st_mode)) {
        return tl::unexpected(refuse + "a symbolic link" + what);
    }
    if (!S_ISREG(before.st_mode)) {
        return tl::unexpected(refuse + "not a regular file" + what);
    }
    fd = UniqueFd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
        const int error = errno;
        return tl::unexpected(path + ": cannot open it: " + errno_text(error));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        const int error = errno;
        return tl::unexpected(path + ": cannot stat it: " + errno_text(error));
    }
    if (st.st_dev != before.st_dev || st.st_ino != before.st_ino || !S_ISREG(st.st_mode)) {
        return tl::unexpected(refuse + "it was replaced while being opened" + what);
    }
    if (st.st_uid != ::geteuid()) {
        return tl::unexpected(refuse + "owned by uid " + std::to_string(st.st_uid) + ", not by uid " +
                              std::to_string(::geteuid()) + what);
    }
    if (st.st_nlink != 1) {
        return tl::unexpected(refuse + "it has " + std::to_string(st.st_nlink) + " hard links" + what);
    }
    if ((st.st_mode & 07777) != k_private_mode && ::fchmod(fd.get(), k_private_mode) != 0) {
        const int error = errno;
        return tl::unexpected(path + ": cannot make it private (mode 0600): " + errno_text(error));
    }
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
        const int error = errno;
        return tl::unexpected(path + ": cannot set it up for writing: " + errno_text(error));
    }
    return fd;
}

std::optional<std::string> not_yours(const std::string& path, int error) {
    struct stat st {};
    if ((error != EACCES && error != EPERM) || ::stat(path.c_str(), &st) != 0 || st.st_uid == ::geteuid())
        return std::nullopt;
    return path + ": permission denied: the file belongs to uid " + std::to_string(st.st_uid) +
           "; run hoptrace as that user (or with sudo), or give another --db";
}

}  // namespace hoptrace::store
