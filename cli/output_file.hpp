#pragma once
// Where `report -o FILE` and `export -o FILE` write. What they write holds captured packets or what was read from
// them, so a new file is private (mode 0600), and a failed run never destroys anything it did not create:
//
// - FILE does not exist, or is a regular file: the output goes to a new temporary file beside it (O_EXCL, mode
//   0600, in FILE's directory) which commit() syncs and renames onto FILE. A run that fails leaves FILE as it was
//   and removes only its temporary file.
// - FILE is anything else that exists (a device such as /dev/full or /dev/null, a FIFO, a terminal, or a symbolic
//   link, such as /dev/stdout): it is opened and written directly, like tcpdump -w does, and never removed. A
//   dangling symbolic link is refused (we would create the file it points to).
//
// Errors are Fatal, one line naming FILE.

#include "tracer/netns.hpp"  // UniqueFd

#include <array>
#include <cstddef>
#include <ostream>
#include <streambuf>
#include <string>

namespace hoptrace::cli {

class OutputFile {
public:
    explicit OutputFile(std::string path);
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    ~OutputFile();  // without a successful commit(): removes the temporary file, and only that

    [[nodiscard]] const std::string& path() const noexcept { return m_path; }
    [[nodiscard]] int fd() const noexcept { return m_fd.get(); }
    // A name of the file opened here, for code that opens its output by name (the pcapng writer): /proc/self/fd/N.
    [[nodiscard]] std::string fd_path() const { return "/proc/self/fd/" + std::to_string(m_fd.get()); }
    // `message` with fd_path() (and the temporary file's name) replaced by path(): errors name the user's file.
    [[nodiscard]] std::string own_name(std::string message) const;

    // Everything is written: a temporary file is synced and renamed onto path(). Idempotent.
    void commit();

private:
    std::string m_path;
    std::string m_temp;  // "" when writing path() directly
    UniqueFd m_fd;
    bool m_committed = false;
};

// An ostream writing to a file descriptor it does not own, with write(2) (stdio's errno is not reliable after a
// failed flush). The first failed write sets badbit and is kept in error() (an errno value).
class FdStream : public std::ostream {
public:
    explicit FdStream(int fd);
    [[nodiscard]] int error() const noexcept { return m_buf.error(); }

private:
    class Buffer : public std::streambuf {
    public:
        explicit Buffer(int fd);
        [[nodiscard]] int error() const noexcept { return m_error; }

    protected:
        int_type overflow(int_type ch) override;
        int sync() override;

    private:
        bool drain();
        int m_fd;
        int m_error = 0;
        std::array<char, std::size_t{64} * 1024> m_data{};
    };
    Buffer m_buf;
};

}  // namespace hoptrace::cli
