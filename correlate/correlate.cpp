#include "correlate/correlate.hpp"

#include "correlate/rule_ties.hpp"

#include "correlate/analysis.hpp"
#include "store/correlation.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>

namespace hoptrace::correlate {
namespace {

// Multicast and broadcast are copied to every port: a fan-out, not one packet's path. The link layer says so
// (a group destination MAC, or a cooked header's broadcast/multicast packet type), which also covers a subnet's
// directed broadcast (172.17.255.255); the address covers frames whose link layer does not tell.
bool is_fan_out(const Sighting& s) noexcept {
    if ((s.flags & packet_flag::k_link_fan_out) != 0) return true;
    if (s.tuple.dst.family == 4) return s.tuple.dst.bytes[0] >= 224;  // multicast 224/4, reserved 240/4, broadcast
    if (s.tuple.dst.family == 6) return s.tuple.dst.bytes[0] == 0xff;
    return false;
}

// IPv6 neighbour discovery and router messages (ICMPv6 133-137) never leave their link: no journey.
bool is_link_control(const Sighting& s) noexcept {
    return s.tuple.proto == 58 && s.icmp_type >= 133 && s.icmp_type <= 137;
}

// The fragments after the first carry no ports: they take their datagram's (the first fragment's at the same
// point: same source, destination, protocol and IP id), so they belong to its flow.
void fill_fragment_ports(std::vector<Sighting>& sightings) {
    struct Key {
        std::uint32_t point;
        std::uint8_t proto;
        IpAddr src;
        IpAddr dst;
        std::uint16_t ip_id;
        bool operator==(const Key&) const = default;
    };
    struct KeyHash {
        std::size_t operator()(const Key& k) const noexcept {
            return TupleHash{}(Tuple{k.proto, k.src, k.dst, k.ip_id, 0}) ^ (std::size_t{k.point} << 20);
        }
    };
    // Several datagrams may share the key (two containers' datagrams with one IP id, masqueraded to one address):
    // each fragment takes the ports of the latest first fragment before it (ties: the earliest after it).
    struct First {
        std::int64_t ts_ns;
        std::uint16_t sport;
        std::uint16_t dport;
    };
    std::unordered_map<Key, std::vector<First>, KeyHash> first;
    auto key = [](const Sighting& s) { return Key{s.point, s.tuple.proto, s.tuple.src, s.tuple.dst, s.ip_id}; };
    for (const Sighting& s : sightings)
        if ((s.flags & packet_flag::k_fragment) != 0 && s.frag_offset == 0)
            first[key(s)].push_back(First{s.ts_ns, s.tuple.sport, s.tuple.dport});
    for (auto& [k, list] : first)
        std::sort(list.begin(), list.end(), [](const First& a, const First& b) { return a.ts_ns < b.ts_ns; });
    for (Sighting& s : sightings) {
        if ((s.flags & packet_flag::k_fragment) == 0 || s.frag_offset == 0) continue;
        const auto it = first.find(key(s));
        if (it == first.end()) continue;
        const auto& list = it->second;
        auto after = std::upper_bound(list.begin(), list.end(), s.ts_ns,
                                      [](std::int64_t ts, const First& f) { return ts < f.ts_ns; });
        const auto chosen = after == list.begin() ? after : after - 1;
        s.tuple.sport = chosen->sport;
        s.tuple.dport = chosen->dport;
        // Another datagram's first fragment as near (a host sends a datagram's fragments back to back, within
        // microseconds; two datagrams interleave only when they are that close): which it belongs to is a guess.
        constexpr std::int64_t k_near_ns = 1'000'000;
        for (auto other = list.begin(); other != list.end(); ++other)
            if (other != chosen && std::abs(other->ts_ns - s.ts_ns) <= k_near_ns &&
                (other->sport != chosen->sport || other->dport != chosen->dport))
                s.uncertain = true;
    }
}

Sighting to_sighting(const store::PacketFields& p) {
    Sighting s;
    s.packet_id = p.packet_id;
    s.point = p.point;
    s.ts_ns = p.ts_ns;
    s.fingerprint = p.fingerprint;
    s.flags = p.flags;
    s.tuple.proto = p.proto;
    s.tuple.src = p.src;
    s.tuple.dst = p.dst;
    s.icmp_type = p.icmp_type;
    s.icmp_code = p.icmp_code;
    if (s.tuple.is_icmp()) {
        s.tuple.sport = is_echo_request(s) || is_echo_reply(s) ? p.icmp_id : 0;
    } else {
        s.tuple.sport = p.sport;
        s.tuple.dport = p.dport;
    }
    if (p.inner_proto) {
        s.inner.proto = *p.inner_proto;
        s.inner.src = p.inner_src;
        s.inner.dst = p.inner_dst;
        s.inner.sport = p.inner_sport;
        s.inner.dport = s.inner.is_icmp() ? 0 : p.inner_dport;
        s.has_inner_ip_id = p.inner_ip_id.has_value();
        s.inner_ip_id = p.inner_ip_id.value_or(0);
        s.has_inner_seq = p.inner_seq.has_value();
        s.inner_seq = p.inner_seq.value_or(0);
    }
    s.ttl = p.ttl;
    s.tcp_flags = p.tcp_flags;
    s.ip_id = p.ip_id;
    s.seq = p.seq;
    s.ack = p.ack;
    s.payload_len = p.payload_len;
    s.ip_len = p.ip_len;
    s.frag_offset = p.frag_offset;
    s.icmp_mtu = p.icmp_mtu;
    s.dont_fragment = s.tuple.src.family == 6 || (s.flags & packet_flag::k_dont_fragment) != 0;
    return s;
}

std::vector<Sighting> load(const store::Database& db) {
    std::vector<Sighting> out;
    out.reserve(store::count_dissected_packets(db));
    store::for_each_dissected_packet(db, [&out](const store::PacketFields& p) {
        Sighting s = to_sighting(p);
        if (!is_fan_out(s) && !is_link_control(s)) out.push_back(s);
    });
    fill_fragment_ports(out);
    return out;
}

store::AddressTuple stored(const Tuple& t) { return {t.src.to_string(), t.dst.to_string(), t.sport, t.dport}; }

std::int64_t stored_id(std::size_t index) { return static_cast<std::int64_t>(index) + 1; }

// Every sighting's journey and hop, in packet id order; observer sightings (a bridge that saw a frame it switched
// between two ports) belong to their journey but are no hop of it.
std::vector<store::Assignment> assignments(std::span<const Sighting> sightings, const Journeys& journeys,
                                           const Analysis& a) {
    std::vector<store::Assignment> out;
    out.reserve(journeys.members.size() + a.observers.members.size());
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        for (std::size_t hop = 0; hop < members.size(); ++hop)
            out.push_back({sightings[members[hop]].packet_id, stored_id(j), static_cast<std::int64_t>(hop)});
        for (const std::uint32_t o : a.observers.of(j)) out.push_back({sightings[o].packet_id, stored_id(j), {}});
    }
    std::sort(out.begin(), out.end(),
              [](const store::Assignment& x, const store::Assignment& y) { return x.packet_id < y.packet_id; });
    return out;
}

void save_flows(store::CorrelationWriter& out, const Analysis& a) {
    for (std::size_t i = 0; i < a.flows.size(); ++i) {
        const Flow& f = a.flows[i];
        out.add(store::FlowRow{stored_id(i), f.original.proto, stored(f.original), stored(f.translated), f.packets,
                               f.journeys, f.first_ts_ns, f.last_ts_ns});
    }
}

void save_journeys(store::CorrelationWriter& out, std::span<const Sighting> sightings, const Journeys& journeys,
                   const Analysis& a) {
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        const Sighting& first = sightings[members.front()];
        const Sighting& last = sightings[members.back()];
        const JourneyInfo& info = a.journeys[j];
        store::JourneyRow row;
        row.id = stored_id(j);
        row.flow_id = stored_id(info.flow);
        row.direction = to_string(info.direction);
        row.fingerprint = first.fingerprint;
        row.sightings = members.size() + a.observers.of(j).size();
        row.first_point = first.point;
        row.last_point = last.point;
        row.first_ts_ns = first.ts_ns;
        row.last_ts_ns = last.ts_ns;
        if (info.loss) row.loss_id = stored_id(*info.loss);
        if (info.relation != Relation::none) {
            row.related_id = stored_id(info.related);
            row.relation = to_string(info.relation);
        }
        row.ambiguous = j < journeys.ambiguous.size() && journeys.ambiguous[j] != 0;
        out.add(row);
    }
}

void save_findings(store::CorrelationWriter& out, const Analysis& a) {
    for (const Rewrite& r : a.rewrites)
        out.add(store::RewriteRow{stored_id(r.flow), to_string(r.direction),
                                  field_name(r.field, a.flows[r.flow].original.is_icmp()), r.from, r.to, r.from_point,
                                  r.to_point, r.packets});
    for (const HopStats& h : a.hops) {
        std::optional<std::int64_t> flow;
        if (h.flow) flow = stored_id(*h.flow);
        out.add(store::HopRow{flow, to_string(h.direction), h.from_point, h.to_point, h.count, h.min_ns, h.p50_ns,
                              h.p90_ns, h.p99_ns, h.max_ns});
    }
    for (std::size_t i = 0; i < a.losses.size(); ++i) {
        const Loss& l = a.losses[i];
        store::LossRow row;
        row.id = stored_id(i);
        row.flow_id = stored_id(l.flow);
        row.direction = to_string(l.direction);
        row.after_point = l.after_point;
        row.expected_point = l.expected_point;
        row.count = l.count;
        row.cause = to_string(l.cause);
        if (l.icmp_error) row.error_journey = stored_id(*l.icmp_error);
        if (l.evidence) row.evidence_id = stored_id(*l.evidence);
        row.outside_window = l.outside_window;
        out.add(row);
    }
}

// Replaces the last correlation (store/correlation.hpp: until the end, meta holds no correlated_ns).
void save(store::Database& db, std::span<const Sighting> sightings, const Journeys& journeys, const Analysis& a) {
    store::CorrelationWriter out(db);
    out.assign(assignments(sightings, journeys, a));
    save_flows(out, a);
    save_journeys(out, sightings, journeys, a);
    save_findings(out, a);
    out.set_path_order(a.path_order);
    out.commit();
}

// The kernel's own NAT translations, from the conntrack dumps of a live capture: the original tuple becomes the
// reply tuple reversed. For ICMP echo the id is in sport (the matcher's tuple), and dport is 0.
std::vector<std::pair<Tuple, Tuple>> kernel_translations(const store::Database& db) {
    std::vector<std::pair<Tuple, Tuple>> out;
    std::unordered_map<std::string, IpAddr> addresses;
    auto address = [&addresses](const std::string& text) {
        auto [it, inserted] = addresses.try_emplace(text);
        if (inserted) it->second = IpAddr::parse(text).value_or(IpAddr{});
        return it->second;
    };
    for (const ConntrackEntry& e : store::conntrack_entries(db)) {
        Tuple original{e.proto, address(e.orig_src), address(e.orig_dst), e.orig_sport, 0};
        Tuple translated{e.proto, address(e.reply_dst), address(e.reply_src), 0, 0};
        if (original.is_icmp()) {
            translated.sport = e.reply_sport;
        } else {
            original.dport = e.orig_dport;
            translated.sport = e.reply_dport;
            translated.dport = e.reply_sport;
        }
        if (original.src.empty() || translated.src.empty() || original == translated) continue;
        out.emplace_back(original, translated);
    }
    return out;
}

}  // namespace

void apply_roles(std::span<const store::Point> points, MatchOptions& options) {
    static const std::unordered_map<std::string, int> k_role_rank{
        {"container", 0}, {"veth", 1}, {"bridge", 2}, {"uplink", 3}};
    constexpr std::uint32_t k_linktype_linux_sll = 113;  // cooked v1: no interface index
    for (const store::Point& p : points) {
        const auto id = static_cast<std::uint32_t>(p.id);
        if (p.role == "container") options.container_points.insert(id);
        if (const auto it = k_role_rank.find(p.role); it != k_role_rank.end()) options.role_rank[id] = it->second;
        if (p.link_type == k_linktype_linux_sll) options.merged_points.insert(id);
        if (p.role != "bridge") continue;
        std::istringstream words(p.addresses);
        for (std::string cidr; words >> cidr;) {
            const auto slash = cidr.find('/');
            const auto address = IpAddr::parse(cidr.substr(0, slash));
            if (!address || slash == std::string::npos) continue;
            options.inside_networks.emplace_back(*address, std::atoi(cidr.c_str() + slash + 1));
        }
    }
}

void set_roles(store::Database& db, const std::map<std::string, std::string>& roles) {
    static const std::set<std::string> k_roles{"container", "veth", "bridge", "uplink", "other"};
    for (const auto& [name, role] : roles) {
        if (!k_roles.contains(role))
            throw store::Error("--role " + name + "=" + role +
                               ": the role is one of container, veth, bridge, uplink, other");
        auto point = db.find_point(name);
        if (!point) {
            std::string known;
            for (const store::Point& p : db.points()) known += (known.empty() ? "" : ", ") + p.name;
            throw store::Error(db.path() + ": no point named '" + name + "' (points: " + known + ")");
        }
        point->role = role;
        point->role_evidence = "given (--role)";
        db.update_point(*point);
    }
}

namespace {

// Points whose role nobody stated (imported files) get one inferred from names and traffic; stored with evidence.
void infer_missing_roles(store::Database& db, std::span<const Sighting> sightings, Summary& summary) {
    std::vector<store::Point> points = db.points();
    std::vector<std::uint32_t> ids;
    std::vector<std::string> names;
    for (const store::Point& p : points) {
        ids.push_back(static_cast<std::uint32_t>(p.id));
        names.push_back(p.ifname.empty() ? p.name : p.name + (p.name.ends_with(p.ifname) ? "" : "/" + p.ifname));
    }
    // A role somebody stated (live topology, --role, or an older file that had one) stays; "other" with no
    // evidence, and earlier inferences, are inferred (again).
    auto unknown = [](const store::Point& p) {
        return p.role_evidence.starts_with("inferred") || (p.role_evidence.empty() && p.role == "other");
    };
    if (std::none_of(points.begin(), points.end(), unknown)) return;
    const std::vector<RoleGuess> guesses = infer_roles(sightings, ids, names);
    for (std::size_t i = 0; i < points.size(); ++i) {
        store::Point& p = points[i];
        if (!unknown(p)) continue;
        p.role = guesses[i].role;
        p.role_evidence = "inferred: " + guesses[i].evidence;
        db.update_point(p);
        summary.inferred.push_back(guesses[i]);
        summary.inferred_names.push_back(p.name);
    }
}

}  // namespace

Summary run(store::Database& db, const MatchOptions& given) {
    MatchOptions options = given;
    Summary summary;
    std::vector<Sighting> sightings = load(db);
    infer_missing_roles(db, sightings, summary);
    apply_roles(db.points(), options);
    options.known_translations = kernel_translations(db);
    for (const auto& [point, window] : store::packet_windows(db)) options.point_windows[point] = window;
    // An imported file was being written from its creation to its last write: that widens what its packets show
    // (a file copied after the capture is younger than its packets and says nothing).
    for (const store::Point& p : db.points()) {
        const auto it = options.point_windows.find(static_cast<std::uint32_t>(p.id));
        if (it == options.point_windows.end()) continue;
        if (p.file_born_ns && *p.file_born_ns < it->second.first) it->second.first = *p.file_born_ns;
        if (p.file_written_ns && *p.file_written_ns > it->second.second) it->second.second = *p.file_written_ns;
    }
    // A live capture knows when it stopped: packets that the next point would have seen before then were lost,
    // even when nothing else arrived there afterwards.
    if (auto start = db.meta("capture_start_ns")) options.capture_start_ns = std::stoll(*start);
    if (auto stop = db.meta("capture_stop_ns")) options.capture_stop_ns = std::stoll(*stop);
    Journeys journeys = match(sightings, options);
    const Analysis analysis = analyse(sightings, journeys, options);
    save(db, sightings, journeys, analysis);
    db.build_indexes();
    // The firewall's verdicts (capture --trace-rules) to the journeys of the packets they traced.
    summary.rule_walks_tied = tie_rule_traces(db, sightings, journeys, analysis, options.max_hop_gap_ns);
    summary.sightings = sightings.size();
    summary.journeys = journeys.count();
    summary.flows = analysis.flows.size();
    summary.rewrites = analysis.rewrites.size();
    summary.losses = analysis.losses.size();
    summary.ambiguous = static_cast<std::uint64_t>(std::count(journeys.ambiguous.begin(), journeys.ambiguous.end(), 1));
    return summary;
}

}  // namespace hoptrace::correlate
