// libFuzzer target for CaptureFile: the input is a whole file (written to a memfd and opened through
// /proc/self/fd, so both libpcap and our pcapng reader read it as a file). Every frame read is dissected.

#include "tracer/capture_file.hpp"
#include "tracer/dissect.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

void check(bool ok)
{
    if (!ok) {
        std::abort();
    }
}

class MemFile {
public:
    MemFile(const std::uint8_t* data, std::size_t size) : m_fd(memfd_create("capture", MFD_CLOEXEC))
    {
        check(m_fd >= 0);
        std::size_t written = 0;
        while (written < size) {
            const ssize_t n = write(m_fd, data + written, size - written);
            check(n > 0);
            written += static_cast<std::size_t>(n);
        }
    }
    MemFile(const MemFile&) = delete;
    MemFile& operator=(const MemFile&) = delete;
    ~MemFile() { close(m_fd); }

    [[nodiscard]] std::string path() const { return "/proc/self/fd/" + std::to_string(m_fd); }

private:
    int m_fd;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const MemFile file(data, size);
    auto capture = hoptrace::CaptureFile::open(file.path());
    if (!capture) {
        check(!capture.error().empty());
        return 0;
    }
    hoptrace::FileFrame ff;
    std::uint64_t frames = 0;
    for (;;) {
        auto more = (*capture)->next(ff);
        if (!more) {
            check(more.error().find(file.path()) == 0);  // the error names the file
            check(!(*capture)->next(ff));                // and stays an error
            break;
        }
        if (!*more) {
            check(!(*capture)->next(ff).value_or(true));  // the end stays the end
            break;
        }
        ++frames;
        check(ff.interface < (*capture)->interfaces().size());
        check(ff.frame.bytes.size() <= size);
        const hoptrace::PacketRecord r = hoptrace::dissect(ff.frame);
        check(r.cap_len == ff.frame.bytes.size());
    }
    check((*capture)->frames_read() == frames);
    return 0;
}
