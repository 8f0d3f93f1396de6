#include "report/export.hpp"

#include "store/containers.hpp"

#include "report/format.hpp"
#include "report/model.hpp"
#include "report/pcapng_writer.hpp"
#include "tracer/packet.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <map>
#include <queue>
#include <unordered_set>
#include <vector>

namespace hoptrace::report {
namespace {

// The largest snap length hoptrace capture and tcpdump use: an interface whose frames were never cut says this.
constexpr std::uint32_t k_default_snaplen = 262144;

struct Interface {
    std::int64_t point_id = 0;
    std::string name;
    PcapngInterface idb;
    std::uint64_t kernel_drops = 0;
};

std::string describe(const store::Point& p, const ContainerInfo* container) {
    std::string d = "role ";
    d.append(p.role);
    if (!p.netns.empty()) d.append(", netns ").append(p.netns);
    if (!p.ifname.empty()) d.append(", interface ").append(p.ifname);
    if (!p.source.empty() && p.source != "live") d.append(", imported from ").append(p.source);
    if (container != nullptr) {  // the container behind it, as the engine said
        d.append(", container ").append(container->name).append(" ").append(container->id.substr(0, 12));
        if (!container->image.empty()) d.append(", image ").append(container->image);
        for (const auto& n : container->networks) d.append(", network ").append(n);
        for (const auto& port : container->ports) d.append(", published ").append(port);
    }
    return d;
}

std::string ethertype_name(std::int64_t ethertype) {
    switch (ethertype) {
        case 0x0806:
            return "ARP";
        case 0x8035:
            return "RARP";
        case 0x88CC:
            return "LLDP";
        case 0x8100:
            return "VLAN";
        case 0x88A8:
            return "QinQ";
        case 0x8863:
        case 0x8864:
            return "PPPoE";
        case 0x888E:
            return "EAPOL";
        case 0x8847:
        case 0x8848:
            return "MPLS";
        default:
            break;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "ethertype 0x%04" PRIx64, static_cast<std::uint64_t>(ethertype) & 0xFFFF);
    return buf;
}

// Correlation gives multicast and broadcast no journey (docs/correlation.md): the same test on the stored text.
bool is_fan_out(const std::string& dst) {
    const auto a = IpAddr::parse(dst);
    if (!a) return false;
    if (a->family == 4) return a->bytes[0] >= 224;  // multicast 224/4, reserved 240/4, broadcast
    return a->family == 6 && a->bytes[0] == 0xff;
}

// Why a packet is in no journey, from its stored fields.
void append_unmatched(std::string& out, const StoredPacket& p) {
    out.append("not matched (");
    if ((p.flags & packet_flag::k_not_ip) != 0) {
        out.append("not IP: ").append(ethertype_name(p.ethertype));
    } else if (p.ip_version == 0 || p.fingerprint == 0) {
        out.append((p.flags & packet_flag::k_truncated) != 0 ? "truncated before the IP header"
                                                             : "no readable IP header");
    } else if (is_fan_out(p.dst)) {
        out.append("multicast or broadcast: copied to every port, not one packet's path");
    } else {
        out.append("not correlated: stored after the last 'hoptrace correlate'");
    }
    out.append(")");
}

// "; rewrote src 172.17.0.2 → 192.168.43.116, id 7777 → 57410": how this sighting's tuple differs from the
// journey's previous one. ICMP echo carries its id in sport (and again in dport): compared once, as "id".
void append_rewrites(std::string& out, const StoredPacket& p) {
    bool first = true;
    auto changed = [&](const char* field, const std::string& from, const std::string& to) {
        if (from == to) return;
        out.append(first ? "; rewrote " : ", ").append(field).append(" ").append(from).append(" → ").append(to);
        first = false;
    };
    changed("src", p.prev_src, p.src);
    changed("dst", p.prev_dst, p.dst);
    const bool icmp = is_icmp(p.proto);
    changed(icmp ? "id" : "sport", std::to_string(p.prev_sport), std::to_string(p.sport));
    if (!icmp) changed("dport", std::to_string(p.prev_dport), std::to_string(p.dport));
}

void build_comment(std::string& out, const StoredPacket& p, const std::string& here,
                   const std::map<std::int64_t, std::string>& point_names) {
    out.clear();
    if (!p.journey || !p.flow) {
        append_unmatched(out, p);
        return;
    }
    out.append("journey ").append(std::to_string(*p.journey));
    out.append(" (flow ").append(std::to_string(*p.flow)).append(", ");
    out.append(p.journey_direction).append(")");
    if (!p.hop) {  // an observer: the bridge saw the frame it switched between two ports
        out.append(": observed at ").append(here);
        out.append(", which switched it between two of its ports (bridge-local, not a hop)");
        return;
    }
    const std::int64_t hop = *p.hop + 1;
    out.append(", hop ").append(std::to_string(hop));
    out.append(" of ").append(std::to_string(p.journey_hops)).append(": ");
    if (hop == 1) {
        out.append("first seen at ").append(here);
        return;
    }
    if (!p.prev_point) {  // the previous hop is not in the store: say where we are, no more
        out.append("at ").append(here);
        return;
    }
    const auto prev = point_names.find(*p.prev_point);
    out.append(prev == point_names.end() ? std::string("?") : prev->second).append(" → ").append(here);
    out.append(" after ").append(format_duration(p.ts_ns - p.prev_ts_ns));
    append_rewrites(out, p);
}

Direction direction_of(const std::string& text) {
    if (text == "in") return Direction::inbound;
    if (text == "out") return Direction::outbound;
    return Direction::unknown;
}

std::string section_comment(const store::Database& db, const ExportOptions& options) {
    std::string c = "hoptrace export of ";
    c.append(db.path().empty() ? std::string(":memory:") : db.path());
    if (options.flows) c.append(", flows: ").append(options.flows->to_string());
    if (const auto host = db.meta("host")) c.append("; captured on ").append(*host);
    if (const auto cmd = db.meta("command_line")) c.append("; by: ").append(*cmd);
    return c;
}

// Per point: the snap length its frames show. A point with cut frames (flag snapped) was captured with the
// largest length seen among them; otherwise nothing was cut and the default (or a larger frame) stands.
std::map<std::int64_t, std::uint32_t> snaplens(const store::Database& db) {
    std::map<std::int64_t, std::uint32_t> out;
    for (const auto& [point, lengths] : captured_lengths(db)) {
        const std::int64_t largest =
            lengths.largest_snapped.value_or(std::max<std::int64_t>(lengths.largest, k_default_snaplen));
        out[point] = static_cast<std::uint32_t>(std::min<std::int64_t>(largest, 0xFFFFFFFF));
    }
    return out;
}

// The merge's order: time, then the point's place on the path (its interface id), then the packet id.
// The interface id is also the index of the point's stream.
struct Head {
    std::int64_t ts_ns = 0;
    std::uint32_t interface = 0;
    std::int64_t id = 0;
};

// priority_queue keeps the largest on top: "later" as its "less" puts the earliest packet there.
struct Later {
    bool operator()(const Head& a, const Head& b) const noexcept {
        if (a.ts_ns != b.ts_ns) return a.ts_ns > b.ts_ns;
        if (a.interface != b.interface) return a.interface > b.interface;
        return a.id > b.id;
    }
};

}  // namespace

tl::expected<ExportSummary, std::string> export_pcapng(const store::Database& db, const std::string& path,
                                                       const ExportOptions& options) {
    ExportSummary summary;
    std::unordered_set<std::int64_t> flows;
    if (options.flows) {
        flows = select_flows(db, *options.flows, &summary.flows);
        summary.flows_selected = flows.size();
    } else {
        summary.flows = summary.flows_selected = count_flows(db);
    }

    const auto snap = snaplens(db);
    std::vector<Interface> interfaces;
    std::map<std::int64_t, std::string> point_names;
    const auto containers = store::containers(db);
    for (const store::Point& p : db.points()) {  // path order, then id
        const std::uint32_t link_type = p.link_type == 0 ? static_cast<std::uint32_t>(LinkType::ethernet) : p.link_type;
        if (link_type > std::numeric_limits<std::uint16_t>::max()) {
            return tl::unexpected(std::string(path)
                                      .append(": point ")
                                      .append(p.name)
                                      .append(" has link type ")
                                      .append(std::to_string(link_type))
                                      .append(", which pcapng cannot describe"));
        }
        Interface i;
        i.point_id = p.id;
        i.name = p.name;
        i.kernel_drops = p.kernel_drops;
        i.idb.name = p.name;
        const auto c = containers.find(p.id);
        i.idb.description = describe(p, c == containers.end() ? nullptr : &c->second);
        i.idb.link_type = static_cast<std::uint16_t>(link_type);
        const auto s = snap.find(p.id);
        i.idb.snaplen = s == snap.end() ? k_default_snaplen : s->second;
        point_names[p.id] = p.name;
        interfaces.push_back(std::move(i));
    }

    auto writer = PcapngWriter::create(path, {options.application, section_comment(db, options)});
    if (!writer) return tl::unexpected(writer.error());
    for (const Interface& i : interfaces) {
        if (auto id = writer->add_interface(i.idb); !id) return tl::unexpected(id.error());
    }
    summary.interfaces = writer->interfaces();

    // One stream per point, merged by time, instead of one ORDER BY over all packets: each stream walks the
    // packets_point_ts index in order, so nothing is sorted and memory stays flat however many packets there are.
    std::vector<PointPackets> streams;
    streams.reserve(interfaces.size());
    std::priority_queue<Head, std::vector<Head>, Later> heads;
    auto advance = [&](std::size_t s) {
        if (streams[s].next())
            heads.push({streams[s].packet().ts_ns, static_cast<std::uint32_t>(s), streams[s].packet().id});
    };
    for (std::size_t s = 0; s < interfaces.size(); ++s) {
        streams.emplace_back(db, interfaces[s].point_id);
        advance(s);
    }

    std::string comment;
    std::int64_t last_ts = 0;
    while (!heads.empty()) {
        const std::size_t s = heads.top().interface;
        heads.pop();
        const StoredPacket& p = streams[s].packet();
        last_ts = std::max(last_ts, p.ts_ns);
        const bool wanted = !options.flows || (p.flow && flows.contains(*p.flow));
        if (wanted) {
            build_comment(comment, p, interfaces[s].name, point_names);
            PcapngPacket packet;
            packet.interface = static_cast<std::uint32_t>(s);
            packet.ts_ns = p.ts_ns;
            packet.wire_len = static_cast<std::uint32_t>(p.wire_len);
            packet.direction = direction_of(p.direction);
            packet.bytes = p.raw;
            packet.comment = comment;
            if (auto ok = writer->write(packet); !ok) return tl::unexpected(ok.error());
        }
        advance(s);
    }
    // Each point's kernel drops as an interface statistics block, so that the loss evidence survives a round
    // trip through Wireshark or `hoptrace import`.
    for (std::size_t s = 0; s < interfaces.size(); ++s) {
        if (auto ok = writer->write_statistics(static_cast<std::uint32_t>(s), last_ts, interfaces[s].kernel_drops); !ok)
            return tl::unexpected(ok.error());
    }
    if (auto ok = writer->finish(); !ok) return tl::unexpected(ok.error());
    summary.packets = writer->packets();
    return summary;
}

}  // namespace hoptrace::report
