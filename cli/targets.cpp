#include "cli/targets.hpp"

#include <algorithm>

namespace hoptrace::cli {

void TargetOptions::add_to(po::options_description& options) {
    // clang-format off
    options.add_options()
        ("netns", po::value(&netns)->composing(), "target: a network namespace by its 'ip netns' name (repeatable)")
        ("pid", po::value(&pids)->composing(), "target: the network namespace of process PID (repeatable)")
        ("container", po::value(&containers)->composing(),
         "target: a Docker/podman container by name or id (asks 'docker inspect' for its pid; repeatable)")
        ("host-netns", po::value(&host_netns), "the namespace that plays the host (default: hoptrace's own)")
        ("dest", po::value(&dest), "destination IP: the uplink is the host's route to it (default: default route)")
        ("point", po::value(&points)->composing(),
         "NS:IF[=NAME]: capture on interface IF of namespace NS too (':IF' = the host namespace), or rename "
         "a discovered point (repeatable)");
    // clang-format on
}

namespace {

std::unique_ptr<Netns> must(tl::expected<Netns, std::string> ns) {
    if (!ns) throw Fatal(ns.error());
    return std::make_unique<Netns>(std::move(*ns));
}

// Index of `ns` in r.namespaces, adding it when it is a namespace not seen yet.
std::size_t index_of(Resolved& r, std::unique_ptr<Netns> ns) {
    for (std::size_t i = 0; i < r.namespaces.size(); ++i)
        if (r.namespaces[i]->same_as(*ns)) return i;
    r.namespaces.push_back(std::move(ns));
    return r.namespaces.size() - 1;
}

}  // namespace

std::string netns_label(const Resolved& r, std::size_t index) { return r.namespaces.at(index)->name(); }

Resolved resolve_targets(const TargetOptions& options, bool require_target) {
    if (require_target && !options.has_target() && options.points.empty())
        throw UsageError("say what to trace: --netns NAME, --pid PID, --container NAME, or --point NS:IF");
    for (const auto& c : options.containers)  // before anything runs: a bad name is a usage error
        if (!is_container_name(c)) throw UsageError(container_name_error(c));
    Resolved r;
    r.namespaces.push_back(must(options.host_netns.empty() ? Netns::self() : Netns::by_name(options.host_netns)));

    std::vector<Target> targets;
    for (const auto& n : options.netns) targets.push_back({Target::Kind::netns, n});
    for (const auto& p : options.pids) targets.push_back({Target::Kind::pid, p});
    for (const auto& c : options.containers) targets.push_back({Target::Kind::container, c});
    std::vector<TargetNamespace> resolved;
    for (const Target& t : targets) {
        auto one = resolve(t);
        if (!one) throw Fatal(one.error());
        resolved.push_back(std::move(*one));
    }
    const std::optional<std::string> dest = options.dest.empty() ? std::nullopt : std::optional(options.dest);
    // Without --host-netns, the host is where the first target's veth peer is (hoptrace may run in another
    // namespace than Docker's host side); hoptrace's own namespace when the peer is there or cannot be found.
    if (options.host_netns.empty() && !resolved.empty()) {
        auto peer = peer_namespace(resolved.front().ns, *r.namespaces[0], dest);
        // A peer in another target's namespace (one container routing through another) is no host.
        const bool a_target = peer && *peer && std::any_of(resolved.begin(), resolved.end(), [&](const auto& t) {
                                  return t.ns.same_as(**peer);
                              });
        if (peer && *peer && !a_target) {
            r.notes.push_back("the host side of " + targets.front().describe() + " is in namespace " + (*peer)->name() +
                              " (its veth peer's), not hoptrace's own: that is the host here; " +
                              "--host-netns NS says otherwise");
            r.namespaces[0] = std::make_unique<Netns>(std::move(**peer));
        }
    }
    std::vector<NamespaceRef> refs{{r.namespaces[0].get(), ""}};
    std::vector<const Target*> target_of_ns(1, nullptr);  // by namespace index: the target that named it
    for (std::size_t k = 0; k < targets.size(); ++k) {
        const Target& t = targets[k];
        std::string label = std::move(resolved[k].label);
        const std::size_t i = index_of(r, std::make_unique<Netns>(std::move(resolved[k].ns)));
        if (i == 0) throw Fatal(t.describe() + ": this is the host namespace itself; give the container's namespace");
        // Two targets in one namespace (a `--network container:X` sidecar and X, or one container given twice)
        // share every interface: they are one target, its points named after the first.
        if (i < target_of_ns.size()) {
            r.notes.push_back(t.describe() + " is in the same network namespace as " + target_of_ns[i]->describe() +
                              ": they share every capture point, named after the first");
            continue;
        }
        target_of_ns.push_back(&t);
        if (resolved[k].container) r.containers.emplace(i, std::move(*resolved[k].container));
        refs.push_back({r.namespaces[i].get(), label});
    }
    if (refs.size() > 1) {
        auto topo = discover(refs, dest);
        if (!topo) throw Fatal(topo.error());
        r.topology = std::move(*topo);
        if (!r.topology.destination_note.empty()) r.notes.push_back(r.topology.destination_note);
    }

    for (const std::string& spec : options.points) {
        const auto colon = spec.find(':');
        if (colon == std::string::npos) throw UsageError("--point '" + spec + "': expected NS:IF[=NAME]");
        const std::string ns_name = spec.substr(0, colon);
        std::string ifname = spec.substr(colon + 1);
        std::string name;
        if (const auto eq = ifname.find('='); eq != std::string::npos) {
            name = ifname.substr(eq + 1);
            ifname = ifname.substr(0, eq);
        }
        if (ifname.empty()) throw UsageError("--point '" + spec + "': no interface name");
        const std::size_t ns = ns_name.empty() ? 0 : index_of(r, must(Netns::by_name(ns_name)));
        auto links = list_links(*r.namespaces[ns]);
        if (!links) throw Fatal("--point " + spec + ": " + links.error());
        const LinkInfo* link = nullptr;
        for (const auto& l : *links)
            if (l.ifname == ifname) link = &l;
        if (link == nullptr) {
            throw Fatal("--point " + spec + ": no interface '" + ifname + "' in " +
                        (ns_name.empty() ? std::string("the host namespace") : "namespace " + ns_name));
        }
        bool overridden = false;
        for (auto& p : r.topology.points) {
            if (p.netns == ns && p.link.ifindex == link->ifindex) {
                if (!name.empty()) p.name = name;
                overridden = true;
            }
        }
        if (!overridden) {
            if (name.empty()) name = ns_name.empty() ? ifname : ns_name + ":" + ifname;
            r.topology.points.push_back({name, Role::other, ns, *link});
        }
    }
    for (std::size_t i = 0; i < r.topology.points.size(); ++i)
        for (std::size_t j = i + 1; j < r.topology.points.size(); ++j)
            if (r.topology.points[i].name == r.topology.points[j].name)
                throw UsageError("two points are named '" + r.topology.points[i].name +
                                 "'; rename one with --point NS:IF=NAME");
    if (r.topology.points.empty()) throw Fatal("no capture point found; name one with --point NS:IF");
    return r;
}

}  // namespace hoptrace::cli
