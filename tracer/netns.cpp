#include "tracer/netns.hpp"
#include "tracer/errno_text.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <vector>

namespace hoptrace {

tl::expected<Netns, std::string> Netns::open_path(const std::string& path, const std::string& label, std::string name) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) return tl::unexpected(label + ": no such network namespace (" + path + " does not exist)");
        if (err == EACCES || err == EPERM)
            return tl::unexpected(label + ": permission denied opening " + path + "; run hoptrace as root");
        return tl::unexpected(label + ": cannot open " + path + ": " + errno_text(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return tl::unexpected(label + ": cannot stat " + path + ": " + errno_text(errno));
    return Netns(std::move(fd), std::move(name), st.st_ino);
}

tl::expected<Netns, std::string> Netns::by_name(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
        return tl::unexpected("--netns '" + name + "': not a valid namespace name");
    return open_path("/run/netns/" + name, "netns " + name, name);
}

tl::expected<Netns, std::string> Netns::by_pid(pid_t pid) {
    if (pid <= 0) return tl::unexpected("--pid " + std::to_string(pid) + ": not a process id");
    const std::string proc = "/proc/" + std::to_string(pid);
    struct stat st {};
    if (::stat(proc.c_str(), &st) != 0) return tl::unexpected("pid " + std::to_string(pid) + ": no such process");
    return open_path(proc + "/ns/net", "pid " + std::to_string(pid), "pid" + std::to_string(pid));
}

tl::expected<Netns, std::string> Netns::self() { return open_path("/proc/thread-self/ns/net", "own namespace", ""); }

tl::expected<Netns, std::string> Netns::duplicate() const {
    UniqueFd fd(::fcntl(m_fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!fd) return tl::unexpected(std::string("cannot duplicate a namespace handle: ") + errno_text(errno));
    return Netns(std::move(fd), m_name, m_inode);
}

tl::expected<void, std::string> Netns::enter() const {
    if (::setns(m_fd.get(), CLONE_NEWNET) != 0) {
        const int err = errno;
        const std::string what = m_name.empty() ? "hoptrace's own namespace" : "namespace " + m_name;
        if (err == EPERM) return tl::unexpected("cannot enter " + what + ": permission denied; run hoptrace as root");
        return tl::unexpected("cannot enter " + what + ": " + errno_text(err));
    }
    return {};
}

std::string Target::describe() const {
    switch (kind) {
        case Kind::netns:
            return "--netns " + value;
        case Kind::pid:
            return "--pid " + value;
        case Kind::container:
            return "--container " + value;
    }
    return value;
}

std::optional<ProgramOutput> run_program(const std::vector<std::string>& argv) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return std::nullopt;
    const pid_t child = ::fork();
    if (child < 0) {
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        return std::nullopt;
    }
    if (child == 0) {
        ::dup2(pipefd[1], STDOUT_FILENO);
        const int devnull = ::open("/dev/null", O_WRONLY);
        if (devnull >= 0) ::dup2(devnull, STDERR_FILENO);
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::close(pipefd[1]);
    ProgramOutput result;
    std::array<char, 4096> buf{};
    for (;;) {
        const ssize_t n = ::read(pipefd[0], buf.data(), buf.size());
        if (n > 0) result.out.append(buf.data(), static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR) break;
    }
    ::close(pipefd[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return std::nullopt;
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

bool is_container_name(std::string_view name) noexcept {
    if (!name.empty() && name.front() == '/') name.remove_prefix(1);
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
    if (name.empty() || !alnum(name.front())) return false;
    return std::all_of(name.begin(), name.end(), [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

std::string container_name_error(const std::string& name) {
    return "--container '" + name +
           "': not a container name or id (letters, digits, '_', '.' and '-', starting "
           "with a letter or digit)";
}

namespace {

bool on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        const auto end = dirs.find(':', start);
        const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return false;
}

tl::expected<pid_t, std::string> container_pid(const std::string& container) {
    if (!is_container_name(container)) return tl::unexpected(container_name_error(container));
    for (const char* engine : {"docker", "podman"}) {
        if (!on_path(engine)) continue;
        // "--": whatever the name looks like, it is an argument, never an option of docker's.
        auto r = run_program({engine, "inspect", "-f", "{{.State.Pid}}", "--", container});
        if (!r || r->status != 0) {
            return tl::unexpected("--container " + container + ": " + engine +
                                  " does not know this container (or its daemon is not running)");
        }
        std::string text = r->out;
        while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
        pid_t pid = 0;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
        if (ec != std::errc() || ptr != text.data() + text.size())
            return tl::unexpected("--container " + container + ": " + engine + " gave no pid ('" + text + "')");
        if (pid <= 0) return tl::unexpected("--container " + container + ": the container is not running");
        return pid;
    }
    return tl::unexpected("--container " + container +
                          ": neither docker nor podman is installed; use --pid PID or --netns NAME");
}

}  // namespace

tl::expected<Netns, std::string> resolve(const Target& target) {
    switch (target.kind) {
        case Target::Kind::netns:
            return Netns::by_name(target.value);
        case Target::Kind::pid: {
            pid_t pid = 0;
            auto [ptr, ec] = std::from_chars(target.value.data(), target.value.data() + target.value.size(), pid);
            if (ec != std::errc() || ptr != target.value.data() + target.value.size())
                return tl::unexpected("--pid '" + target.value + "': not a process id");
            return Netns::by_pid(pid);
        }
        case Target::Kind::container:
            return container_pid(target.value).and_then([](pid_t pid) { return Netns::by_pid(pid); });
    }
    return tl::unexpected(std::string("unknown target"));
}

}  // namespace hoptrace
