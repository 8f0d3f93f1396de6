#pragma once
// Network namespaces: handles (an open /run/netns/NAME or /proc/PID/ns/net), the capture targets that
// name them, and running code inside one. setns() changes only the calling thread's namespace, so work in
// another namespace runs on a thread of its own; sockets opened there stay in that namespace for good.

#include "tracer/handles.hpp"

#include <tl/expected.hpp>

#include <sys/types.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace hoptrace {

class Netns {
public:
    // `ip netns` name: /run/netns/NAME.
    static tl::expected<Netns, std::string> by_name(const std::string& name);
    // The namespace of a process: /proc/PID/ns/net.
    static tl::expected<Netns, std::string> by_pid(pid_t pid);
    // The namespace hoptrace itself runs in.
    static tl::expected<Netns, std::string> self();

    Netns(Netns&&) noexcept = default;
    Netns& operator=(Netns&&) noexcept = default;

    [[nodiscard]] int fd() const noexcept { return m_fd.get(); }
    // What the user called it: the ip-netns name, "pid1234", or "" for hoptrace's own namespace.
    [[nodiscard]] const std::string& name() const noexcept { return m_name; }
    [[nodiscard]] ino_t inode() const noexcept { return m_inode; }
    [[nodiscard]] bool same_as(const Netns& other) const noexcept { return m_inode == other.m_inode; }
    [[nodiscard]] tl::expected<Netns, std::string> duplicate() const;

    // Moves the calling thread into this namespace. Only for threads hoptrace owns (see run_in).
    [[nodiscard]] tl::expected<void, std::string> enter() const;

private:
    static tl::expected<Netns, std::string> open_path(const std::string& path, const std::string& label,
                                                      std::string name);
    Netns(UniqueFd fd, std::string name, ino_t inode) : m_fd(std::move(fd)), m_name(std::move(name)), m_inode(inode) {}
    UniqueFd m_fd;
    std::string m_name;
    ino_t m_inode = 0;
};

// Runs fn() on a fresh thread inside `ns` and returns its result; fn's exceptions propagate. fn must return
// a tl::expected<T, std::string> so that failing to enter the namespace has somewhere to go.
template <typename Fn>
auto run_in(const Netns& ns, Fn&& fn) -> std::invoke_result_t<Fn> {
    using Result = std::invoke_result_t<Fn>;
    std::optional<Result> result;
    std::exception_ptr error;
    std::thread worker([&] {
        try {
            if (auto entered = ns.enter(); !entered) {
                result.emplace(tl::unexpected(entered.error()));
                return;
            }
            result.emplace(fn());
        } catch (...) {
            error = std::current_exception();
        }
    });
    worker.join();
    if (error) std::rethrow_exception(error);
    return std::move(*result);
}

// Runs argv (no shell) in the calling thread's network namespace — a forked child inherits it — and returns its
// exit status, stdout and stderr; nullopt when the program cannot be run.
struct ProgramOutput {
    int status = -1;
    std::string out;
    std::string err;
};
std::optional<ProgramOutput> run_program(const std::vector<std::string>& argv);

// What the user asked to trace: --netns NAME, --pid PID or --container NAME|ID.
struct Target {
    enum class Kind { netns, pid, container };
    Kind kind = Kind::netns;
    std::string value;

    [[nodiscard]] std::string describe() const;  // "--netns c1"
};

// A target's namespace and the label its points are named with: the netns name, `pidPID`, or the container's
// own name as the engine knows it — the same however it was typed (name, `/name`, short or full ID).
// What the engine says about a container target (docker inspect): for the points named after it.
struct ContainerInfo {
    std::string name;   // without the leading '/'
    std::string id;     // the full ID
    std::string image;  // as it was run (Config.Image)
    std::vector<std::string> networks;
    std::vector<std::string> ports;  // published: "0.0.0.0:8080->80/tcp"
};

// The space-separated words of `line` (ContainerInfo's lists, as docker inspect prints them and the store keeps them).
std::vector<std::string> split_words(std::string_view line);

struct TargetNamespace {
    Netns ns;
    std::string label;
    std::optional<ContainerInfo> container;  // --container targets
};

// Resolves a target to its namespace. Containers are asked of the Docker CLI (`docker inspect --type container -f
// '{{.State.Pid}} {{.Name}} …' -- NAME`: pid, name, ID, image, networks, published ports, one call), or podman when
// that is what is installed; a NAME that is not a valid container name or id is refused before either is run.
tl::expected<TargetNamespace, std::string> resolve(const Target& target);

// Whether `name` can be a Docker/podman container name or id: [a-zA-Z0-9][a-zA-Z0-9_.-]*, optionally after one '/'
// (as `docker inspect` prints names). Anything else (an empty name, "--format=…", spaces) is never passed on.
bool is_container_name(std::string_view name) noexcept;
// The one line for a name is_container_name() refuses: "--container '--format=x': not a container name or id (…)".
std::string container_name_error(const std::string& name);

}  // namespace hoptrace
