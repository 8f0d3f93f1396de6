// hoptrace topology TARGET [--host-netns NS] [--dest IP] [--point NS:IF[=NAME]]… [--json]

#include "cli/command.hpp"
#include "cli/targets.hpp"

#include <nlohmann/json.hpp>

#include <iostream>

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
        for (const auto& n : topo.nat) out["nat"].push_back({{"kind", n.kind}, {"chain", n.chain}, {"rule", n.rule}});
        out["dest"] = topo.dest;
        std::cout << out.dump(2) << "\n";
        return k_exit_ok;
    }

    std::string path;
    for (const auto& p : topo.points) {
        std::string where = p.link.addresses.empty() ? "" : p.link.addresses.front();
        if (!p.link.mac.empty() && p.role == Role::container) where += (where.empty() ? "" : ", ") + p.link.mac;
        path += (path.empty() ? "" : " → ") + std::string(to_string(p.role)) + " " + p.name +
                (where.empty() ? "" : " (" + where + ")");
    }
    bool dnat = false;
    for (const auto& n : topo.nat) dnat = dnat || n.kind == "DNAT";
    std::cout << path << (topo.masquerade ? " [MASQUERADE]" : "") << (dnat ? " [DNAT]" : "") << "\n\n";
    std::cout << "  role       point             netns            ifindex  mac                addresses\n";
    for (const auto& p : topo.points) {
        std::string addrs;
        for (const auto& a : p.link.addresses) addrs += (addrs.empty() ? "" : " ") + a;
        const std::string ns = netns_label(r, p.netns).empty() ? "(host)" : netns_label(r, p.netns);
        char line[512];
        std::snprintf(line, sizeof line, "  %-10s %-17s %-16s %7u  %-17s  %s\n", to_string(p.role), p.name.c_str(),
                      ns.c_str(), p.link.ifindex, p.link.mac.c_str(), addrs.c_str());
        std::cout << line;
    }
    if (!topo.nat.empty()) {
        std::cout << "\nNAT rules in the host namespace that apply (iptables nat table):\n";
        for (const auto& n : topo.nat) std::cout << "  " << n.rule << "\n";
    }
    return k_exit_ok;
}

}  // namespace hoptrace::cli
