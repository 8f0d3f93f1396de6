#pragma once
// One live line of progress on stderr (import's packet counter, capture's per-point counters): redrawn in
// place at most every `interval`, only when stderr is a terminal and the user did not ask for quiet.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace hoptrace::cli {

class StatusLine {
public:
    explicit StatusLine(bool quiet, std::chrono::milliseconds interval = std::chrono::milliseconds(250))
        : m_enabled(!quiet && isatty(STDERR_FILENO) == 1), m_interval(interval) {}
    StatusLine(const StatusLine&) = delete;
    StatusLine& operator=(const StatusLine&) = delete;
    ~StatusLine() { clear(); }

    [[nodiscard]] bool enabled() const noexcept { return m_enabled; }

    // Redraws the line if the interval has passed; `text` is only built when it will be shown.
    template <typename MakeText>
    void update(MakeText&& make_text) {
        if (!m_enabled) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - m_last < m_interval) return;
        m_last = now;
        const std::string text = make_text();
        std::fprintf(stderr, "\r\033[K%s", text.c_str());
        std::fflush(stderr);
        m_dirty = true;
    }

    void clear() noexcept {
        if (m_dirty) std::fputs("\r\033[K", stderr);
        m_dirty = false;
    }

private:
    bool m_enabled;
    std::chrono::milliseconds m_interval;
    bool m_dirty = false;
    std::chrono::steady_clock::time_point m_last{};
};

}  // namespace hoptrace::cli
