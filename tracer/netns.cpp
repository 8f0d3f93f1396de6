#include "tracer/netns.hpp"
#include "tracer/errno_text.hpp"

#include <fcntl.h>
#include <poll.h>
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
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return std::nullopt;
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
        ::close(out_pipe[0]);
        ::close(out_pipe[1]);
        return std::nullopt;
    }
    const pid_t child = ::fork();
    if (child < 0) {
        for (const int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
        return std::nullopt;
    }
    if (child == 0) {
        ::dup2(out_pipe[1], STDOUT_FILENO);
        ::dup2(err_pipe[1], STDERR_FILENO);
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    ProgramOutput result;
    // Both pipes at once: a program that fills one while we wait on the other must not block.
    std::array<pollfd, 2> fds{pollfd{out_pipe[0], POLLIN, 0}, pollfd{err_pipe[0], POLLIN, 0}};
    std::array<std::string*, 2> into{&result.out, &result.err};
    std::array<char, 4096> buf{};
    for (int open = 2; open > 0;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (std::size_t k = 0; k < fds.size(); ++k) {
            if (fds[k].fd < 0 || fds[k].revents == 0) continue;
            const ssize_t n = ::read(fds[k].fd, buf.data(), buf.size());
            if (n > 0) {
                into[k]->append(buf.data(), static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                ::close(fds[k].fd);
                fds[k].fd = -1;
                --open;
            }
        }
    }
    for (const auto& f : fds)
        if (f.fd >= 0) ::close(f.fd);
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

// The first non-empty line of a program's message, without control characters, at most 300 bytes.
std::string first_line(const std::string& text) {
    std::string line;
    for (const char c : text) {
        if (c == '\n' && !line.empty()) break;
        if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) line += c;
        if (line.size() >= 300) break;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line;
}

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

struct Container {
    pid_t pid = 0;
    ContainerInfo info;  // info.name: the engine's, without its leading '/'
};

// One line per fact: "PID /NAME", the ID, the image, the networks, the published ports (each list space-separated),
// the network mode (container:ID for a sidecar that shares another's namespace).
constexpr const char* k_inspect_format =
    "{{.State.Pid}} {{.Name}}\n{{.Id}}\n{{.Config.Image}}\n"
    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}\n"
    "{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}}:{{.HostPort}}->{{$p}} {{end}}{{end}}\n"
    "{{.HostConfig.NetworkMode}}";
constexpr std::size_t k_inspect_lines = 6;

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out(1);
    for (const char c : text) {
        if (c == '\n') out.emplace_back();
        else if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f && out.back().size() < 1000) out.back() += c;
    }
    return out;
}

}  // namespace

std::vector<std::string> split_words(std::string_view line) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < line.size()) {
        const auto end = std::min(line.find(' ', start), line.size());
        if (end > start) out.emplace_back(line.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

namespace {

tl::expected<Container, std::string> inspect_container(const std::string& container) {
    if (!is_container_name(container)) return tl::unexpected(container_name_error(container));
    for (const char* engine : {"docker", "podman"}) {
        if (!on_path(engine)) continue;
        // "--": whatever the name looks like, it is an argument, never an option of docker's.
        // --type container: an image of the same name is not what was asked for.
        auto r = run_program({engine, "inspect", "--type", "container", "-f", k_inspect_format, "--", container});
        if (!r || r->status != 0) {
            // docker's own first line says which it is ("No such object", "Cannot connect to the Docker daemon
            // at …"), printable and cut to one line.
            const std::string said = r ? first_line(r->err) : "";
            return tl::unexpected(
                "--container " + container + ": " + engine +
                (said.empty() ? " does not know this container (or its daemon is not running)" : " says: " + said));
        }
        const std::string text = first_line(r->out);
        const auto space = text.find(' ');
        Container c;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + std::min(space, text.size()), c.pid);
        if (ec != std::errc() || ptr != text.data() + std::min(space, text.size()))
            return tl::unexpected("--container " + container + ": " + engine + " gave no pid ('" + text + "')");
        if (c.pid <= 0) return tl::unexpected("--container " + container + ": the container is not running");
        std::string& name = c.info.name;
        name = space == std::string::npos ? "" : text.substr(space + 1);
        if (!name.empty() && name.front() == '/') name.erase(0, 1);
        if (!is_container_name(name)) name = container;  // an engine that names it otherwise: as typed
        const std::vector<std::string> facts = lines_of(r->out);
        auto fact = [&](std::size_t i) { return i < facts.size() ? facts[i] : std::string(); };
        c.info.id = fact(1);
        c.info.image = fact(2);
        c.info.networks = split_words(fact(3));
        c.info.ports = split_words(fact(4));
        return c;
    }
    return tl::unexpected("--container " + container +
                          ": neither docker nor podman is installed; use --pid PID or --netns NAME");
}

// The running container whose network namespace `ns` is, when docker or podman knows one (two calls: `ps`, then one
// `inspect` of them all); nullopt when there is no engine, it does not answer, or no container is in `ns`.
std::optional<ContainerInfo> container_in(const Netns& ns, pid_t pid) {
    for (const char* engine : {"docker", "podman"}) {
        if (!on_path(engine)) continue;
        const auto ps = run_program({engine, "ps", "-q", "--no-trunc"});
        if (!ps || ps->status != 0) return std::nullopt;
        std::vector<std::string> argv{engine, "inspect", "--type", "container", "-f", k_inspect_format, "--"};
        const std::size_t fixed = argv.size();
        for (const std::string& id : lines_of(ps->out))
            if (is_container_name(id)) argv.push_back(id);
        if (argv.size() == fixed) return std::nullopt;
        const auto r = run_program(argv);
        if (!r || r->status != 0) return std::nullopt;
        // k_inspect_lines per container, one container after the other. Several in `ns` (a --network container:X
        // sidecar and X): the one whose own process `pid` is, else the one that owns the namespace.
        const std::vector<std::string> lines = lines_of(r->out);
        std::vector<std::pair<ContainerInfo, std::pair<pid_t, bool>>> found;  // (info, (its pid, a sidecar))
        for (std::size_t i = 0; i + k_inspect_lines - 1 < lines.size(); i += k_inspect_lines) {
            const auto space = lines[i].find(' ');
            pid_t its = 0;
            const auto [ptr, ec] =
                std::from_chars(lines[i].data(), lines[i].data() + std::min(space, lines[i].size()), its);
            if (ec != std::errc() || its <= 0 || space == std::string::npos) continue;
            struct stat st {};
            const std::string path = "/proc/" + std::to_string(its) + "/ns/net";
            if (::stat(path.c_str(), &st) != 0 || st.st_ino != ns.inode()) continue;
            ContainerInfo c{lines[i].substr(space + 1), lines[i + 1], lines[i + 2], split_words(lines[i + 3]),
                            split_words(lines[i + 4])};
            if (!c.name.empty() && c.name.front() == '/') c.name.erase(0, 1);
            if (!is_container_name(c.name)) continue;
            found.emplace_back(std::move(c), std::pair{its, lines[i + 5].starts_with("container:")});
        }
        for (const auto& [c, how] : found)
            if (how.first == pid) return c;
        std::optional<ContainerInfo> owner;
        for (const auto& [c, how] : found) {
            if (how.second) continue;
            if (owner) return std::nullopt;  // two owners of one namespace: nothing says which
            owner = c;
        }
        return owner;
    }
    return std::nullopt;
}

}  // namespace

tl::expected<TargetNamespace, std::string> resolve(const Target& target) {
    auto labelled = [](std::string label) {
        return [label = std::move(label)](Netns ns) { return TargetNamespace{std::move(ns), label, std::nullopt}; };
    };
    switch (target.kind) {
        case Target::Kind::netns:
            return Netns::by_name(target.value).map(labelled(target.value));
        case Target::Kind::pid: {
            pid_t pid = 0;
            auto [ptr, ec] = std::from_chars(target.value.data(), target.value.data() + target.value.size(), pid);
            if (ec != std::errc() || ptr != target.value.data() + target.value.size())
                return tl::unexpected("--pid '" + target.value + "': not a process id");
            auto ns = Netns::by_pid(pid);
            if (!ns) return tl::unexpected(ns.error());
            // A process of a container: its points are named after the container, as with --container.
            if (auto c = container_in(*ns, pid)) return TargetNamespace{std::move(*ns), c->name, std::move(*c)};
            return TargetNamespace{std::move(*ns), "pid" + std::to_string(pid), std::nullopt};
        }
        case Target::Kind::container: {
            auto c = inspect_container(target.value);
            if (!c) return tl::unexpected(c.error());
            return Netns::by_pid(c->pid).map([&](Netns ns) {
                return TargetNamespace{std::move(ns), c->info.name, c->info};
            });
        }
    }
    return tl::unexpected(std::string("unknown target"));
}

}  // namespace hoptrace
