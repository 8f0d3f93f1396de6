// hoptrace topology TARGET [--host-netns NS] [--dest IP] [--point NS:IF[=NAME]]… [--json]

#include "cli/command.hpp"
#include "cli/targets.hpp"
#include "report/format.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace hoptrace::cli {

int cmd_topology(const Invocation& inv) {
    TargetOptions targets;
    bool json = false;
    po::options_description options("options");
    targets.add_to(options);
    options.add_options()("json", po::bool_switch(&json), "print JSON instead of text");
    po::variables_map vm;
    if (!parse(inv, "(--netns NAME | --pid PID | --container NAME)… [--host-netns NS] [--dest IP] [--json]", options,
               nullptr, vm))
        return k_exit_ok;
    const Resolved r = resolve_targets(targets, true);
    for (const auto& note : r.notes) std::fprintf(stderr, "hoptrace: note: %s\n", note.c_str());
    const Topology& topo = r.topology;

    if (json) {
        nlohmann::ordered_json out;
        out["points"] = nlohmann::ordered_json::array();
        for (const auto& p : topo.points) {
            nlohmann::ordered_json j;
            j["name"] = p.name;
            j["role"] = to_string(p.role);
            j["netns"] = netns_label(r, p.netns);
            j["ifname"] = p.link.ifname;
            j["ifindex"] = p.link.ifindex;
            j["kind"] = p.link.kind;
            j["mac"] = p.link.mac;
            j["addresses"] = p.link.addresses;
            j["peer_ifindex"] = p.link.peer_ifindex;
            j["master"] = p.link.master;
            j["up"] = p.link.up;
            out["points"].push_back(std::move(j));
        }
        out["masquerade"] = topo.masquerade;
        out["nat"] = nlohmann::ordered_json::array();
        for (const auto& n : topo.nat)
            out["nat"].push_back({{"kind", n.kind}, {"chain", n.chain}, {"rule", n.rule}, {"family", n.family}});
        out["dest"] = topo.dest;
        out["destination"] = to_string(topo.destination);  // routed | host | isolated
        out["destination_note"] = topo.destination_note;
        std::cout << out.dump(2) << "\n";
        return k_exit_ok;
    }

    // One line per container: container → its veth → the bridge that veth is a port of → the uplink.
    auto describe = [&](const TopologyPoint& p) {
        std::string where = p.link.addresses.empty() ? "" : p.link.addresses.front();
        if (!p.link.mac.empty() && p.role == Role::container) where += (where.empty() ? "" : ", ") + p.link.mac;
        return std::string(to_string(p.role)) + " " + p.name + (where.empty() ? "" : " (" + where + ")");
    };
    auto find = [&](Role role, std::uint32_t ifindex) -> const TopologyPoint* {
        for (const auto& p : topo.points)
            if (p.role == role && (ifindex == 0 || p.link.ifindex == ifindex)) return &p;
        return nullptr;
    };
    std::vector<std::string> paths;
    for (std::size_t i = 0; i < topo.points.size(); ++i) {
        const TopologyPoint& p = topo.points[i];
        if (p.role != Role::container) continue;
        std::string path = describe(p);
        const TopologyPoint* veth =
            i + 1 < topo.points.size() && topo.points[i + 1].role == Role::veth ? &topo.points[i + 1] : nullptr;
        if (veth != nullptr) {
            path += " → " + describe(*veth);
            if (const TopologyPoint* bridge = find(Role::bridge, veth->link.master)) path += " → " + describe(*bridge);
        }
        if (const TopologyPoint* uplink = find(Role::uplink, 0)) path += " → " + describe(*uplink);
        paths.push_back(path);
    }
    for (const auto& p : topo.points)
        if (p.role == Role::other) paths.push_back(describe(p));
    bool dnat = false;
    for (const auto& n : topo.nat) dnat = dnat || n.kind == "DNAT";
    for (const auto& line : paths)
        std::cout << line << (topo.masquerade ? " [MASQUERADE]" : "") << (dnat ? " [DNAT]" : "") << "\n";
    std::cout << "\n";
    // Columns as wide as their widest cell: a container named by its 64-character ID keeps the table aligned.
    std::vector<std::vector<std::string>> rows{{"role", "point", "netns", "ifindex", "mac", "addresses"}};
    for (const auto& p : topo.points) {
        std::string addrs;
        for (const auto& a : p.link.addresses) addrs += (addrs.empty() ? "" : " ") + a;
        const std::string ns = netns_label(r, p.netns).empty() ? "(host)" : netns_label(r, p.netns);
        rows.push_back({to_string(p.role), p.name, ns, std::to_string(p.link.ifindex), p.link.mac, addrs});
    }
    std::cout << report::table(rows, "  ", {false, false, false, true, false, false});
    if (!topo.nat.empty()) {
        std::cout << "\nNAT rules in the host namespace that apply (iptables and ip6tables nat tables):\n";
        for (const auto& n : topo.nat) std::cout << "  " << n.rule << "\n";
    }
    return k_exit_ok;
}

}  // namespace hoptrace::cli
