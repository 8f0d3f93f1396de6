#include "cli/output_file.hpp"
#include "tracer/errno_text.hpp"

#include "cli/command.hpp"

#include <fcntl.h>
#include <stdlib.h>  // mkostemp
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace hoptrace::cli {

namespace {

// Replaces every occurrence of `from` in `text` by `to`.
void replace_all(std::string& text, const std::string& from, const std::string& to) {
    if (from.empty()) return;
    for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
        text.replace(at, from.size(), to);
}

}  // namespace

OutputFile::OutputFile(std::string path) : m_path(std::move(path)) {
    if (m_path.empty()) throw UsageError("-o needs a file name");
    struct stat st {};
    const bool exists = ::lstat(m_path.c_str(), &st) == 0;
    if (!exists && errno != ENOENT) {
        const int error = errno;
        throw Fatal(m_path + ": cannot write to it: " + errno_text(error));
    }
    if (exists && S_ISDIR(st.st_mode)) throw Fatal(m_path + ": is a directory; give a file name");
    if (exists && !S_ISREG(st.st_mode)) {
        // No O_CREAT: a dangling link stays dangling. O_TRUNC matters only for a regular file behind a link.
        m_fd = UniqueFd(::open(m_path.c_str(), O_WRONLY | O_TRUNC | O_NOCTTY | O_CLOEXEC));
        if (!m_fd) {
            const int error = errno;
            if (error == ENOENT && S_ISLNK(st.st_mode)) {
                throw Fatal(m_path +
                            ": a symbolic link to a file that does not exist; hoptrace does not create a "
                            "file through a link: remove the link or give the path of the file itself");
            }
            throw Fatal(m_path + ": cannot write to it: " + errno_text(error));
        }
        return;
    }
    if (exists && ::access(m_path.c_str(), W_OK) != 0) {
        const int error = errno;  // a file made read-only is not replaced behind its owner's back
        throw Fatal(m_path + ": cannot write to it: " + errno_text(error));
    }
    // A new file beside the target: same directory, so that rename() replaces the target in one step.
    const std::filesystem::path target(m_path);
    std::string name = target.filename().string();
    if (name.size() > 200) name.resize(200);  // room for the suffix within NAME_MAX
    std::string pattern = (target.parent_path() / ("." + name + ".hoptrace-XXXXXX")).string();
    m_fd = UniqueFd(::mkostemp(pattern.data(), O_CLOEXEC));  // O_EXCL, mode 0600
    if (!m_fd) {
        const int error = errno;
        const std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
        throw Fatal(m_path + ": cannot create a temporary file beside it (in " + dir + "): " + errno_text(error));
    }
    m_temp = pattern;
}

OutputFile::~OutputFile() {
    if (!m_committed && !m_temp.empty()) ::unlink(m_temp.c_str());
}

std::string OutputFile::own_name(std::string message) const {
    replace_all(message, fd_path(), m_path);
    replace_all(message, m_temp, m_path);
    return message;
}

void OutputFile::commit() {
    if (m_committed || m_temp.empty()) {
        m_committed = true;
        return;
    }
    if (::fsync(m_fd.get()) != 0) {
        const int error = errno;
        throw Fatal(m_path + ": write failed: " + errno_text(error));
    }
    if (::rename(m_temp.c_str(), m_path.c_str()) != 0) {
        const int error = errno;
        throw Fatal(m_path + ": cannot replace it with the file written: " + errno_text(error));
    }
    m_committed = true;
    // The rename itself reaches the disk with the directory; best effort, the file is in place either way.
    const std::filesystem::path parent = std::filesystem::path(m_path).parent_path();
    const UniqueFd dir(::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) static_cast<void>(::fsync(dir.get()));
}

FdStream::FdStream(int fd) : std::ostream(nullptr), m_buf(fd) { rdbuf(&m_buf); }

FdStream::Buffer::Buffer(int fd) : m_fd(fd) { setp(m_data.data(), m_data.data() + m_data.size()); }

bool FdStream::Buffer::drain() {
    const char* at = pbase();
    const char* const end = pptr();
    while (at < end && m_error == 0) {
        const ssize_t n = ::write(m_fd, at, static_cast<std::size_t>(end - at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) m_error = errno;
        else if (n == 0) m_error = EIO;
        else at += n;
    }
    setp(m_data.data(), m_data.data() + m_data.size());
    return m_error == 0;
}

FdStream::Buffer::int_type FdStream::Buffer::overflow(int_type ch) {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
        *pptr() = traits_type::to_char_type(ch);
        pbump(1);
    }
    return traits_type::not_eof(ch);
}

int FdStream::Buffer::sync() { return drain() ? 0 : -1; }

}  // namespace hoptrace::cli
