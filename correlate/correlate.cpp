#include "correlate/correlate.hpp"

#include "correlate/analysis.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>

namespace hoptrace::correlate {
namespace {

bool is_echo(std::uint8_t proto, std::uint8_t type) noexcept {
    return (proto == 1 && (type == 0 || type == 8)) || (proto == 58 && (type == 128 || type == 129));
}

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

class AddressCache {
public:
    const IpAddr& get(const std::string& text) {
        auto [it, inserted] = m_cache.try_emplace(text);
        if (inserted) it->second = IpAddr::parse(text).value_or(IpAddr{});
        return it->second;
    }

private:
    std::unordered_map<std::string, IpAddr> m_cache;
};

std::vector<Sighting> load(store::Database& db) {
    std::vector<Sighting> out;
    auto count = db.prepare("SELECT count(*) FROM packets WHERE fingerprint != 0");
    if (count.step()) out.reserve(static_cast<std::size_t>(count.column_int(0)));
    auto q = db.prepare(
        "SELECT id, point_id, ts_ns, fingerprint, flags, proto, src, dst, sport, dport, icmp_type, icmp_code, "
        "icmp_id, inner_proto, inner_src, inner_dst, inner_sport, inner_dport, ttl, tcp_flags, ip_id, "
        "coalesce(tcp_seq, icmp_seq, 0), coalesce(tcp_ack, 0), payload_len, inner_ip_id, inner_seq, ip_len, "
        "frag_offset, coalesce(icmp_mtu, 0) FROM packets WHERE fingerprint != 0 ORDER BY id");
    AddressCache addresses;
    while (q.step()) {
        Sighting s;
        s.packet_id = q.column_int(0);
        s.point = static_cast<std::uint32_t>(q.column_int(1));
        s.ts_ns = q.column_int(2);
        s.fingerprint = static_cast<std::uint64_t>(q.column_int(3));
        s.flags = static_cast<std::uint32_t>(q.column_int(4));
        s.tuple.proto = static_cast<std::uint8_t>(q.column_int(5));
        s.tuple.src = addresses.get(q.column_text(6));
        s.tuple.dst = addresses.get(q.column_text(7));
        s.icmp_type = static_cast<std::uint8_t>(q.column_int(10));
        s.icmp_code = static_cast<std::uint8_t>(q.column_int(11));
        if (s.tuple.is_icmp()) {
            s.tuple.sport = is_echo(s.tuple.proto, s.icmp_type) ? static_cast<std::uint16_t>(q.column_int(12)) : 0;
        } else {
            s.tuple.sport = static_cast<std::uint16_t>(q.column_int(8));
            s.tuple.dport = static_cast<std::uint16_t>(q.column_int(9));
        }
        if (!q.column_is_null(13)) {
            s.inner.proto = static_cast<std::uint8_t>(q.column_int(13));
            s.inner.src = addresses.get(q.column_text(14));
            s.inner.dst = addresses.get(q.column_text(15));
            s.inner.sport = static_cast<std::uint16_t>(q.column_int(16));
            s.inner.dport = s.inner.is_icmp() ? 0 : static_cast<std::uint16_t>(q.column_int(17));
            s.has_inner_ip_id = !q.column_is_null(24);
            s.inner_ip_id = static_cast<std::uint16_t>(q.column_int(24));
            s.has_inner_seq = !q.column_is_null(25);
            s.inner_seq = static_cast<std::uint32_t>(q.column_int(25));
        }
        s.ttl = static_cast<std::uint8_t>(q.column_int(18));
        s.tcp_flags = static_cast<std::uint8_t>(q.column_int(19));
        s.ip_id = static_cast<std::uint16_t>(q.column_int(20));
        s.seq = static_cast<std::uint32_t>(q.column_int(21));
        s.ack = static_cast<std::uint32_t>(q.column_int(22));
        s.payload_len = static_cast<std::uint32_t>(q.column_int(23));
        s.ip_len = static_cast<std::uint32_t>(q.column_int(26));
        s.frag_offset = static_cast<std::uint16_t>(q.column_int(27));
        s.icmp_mtu = static_cast<std::uint32_t>(q.column_int(28));
        s.dont_fragment = s.tuple.src.family == 6 || (s.flags & packet_flag::k_dont_fragment) != 0;
        if (is_fan_out(s) || is_link_control(s)) continue;
        out.push_back(s);
    }
    fill_fragment_ports(out);
    return out;
}

void bind_tuple(store::Statement& st, int first, const Tuple& t) {
    st.bind(first, t.src.to_string());
    st.bind(first + 1, t.dst.to_string());
    st.bind(first + 2, std::int64_t{t.sport});
    st.bind(first + 3, std::int64_t{t.dport});
}

// Observer sightings (a bridge that saw a frame it switched between two ports) belong to their journey but
// are no hop of it: journey_id set, hop NULL.
void append_observers(std::span<const Sighting> sightings, const Analysis& a,
                      std::vector<std::array<std::int64_t, 3>>& assignments) {
    for (std::size_t j = 0; j < a.observers.count(); ++j)
        for (const std::uint32_t o : a.observers.of(j))
            assignments.push_back({sightings[o].packet_id, static_cast<std::int64_t>(j + 1), -1});
}

// Rows of `packets` changed per transaction: the WAL (and the room it takes) stays a few MiB, however large the
// capture; a checkpoint can run between two transactions.
// (Each row holds its frame: 1024 rows of full-size frames are a few MiB of pages.)
constexpr std::size_t k_packet_rows_per_transaction = 1024;

// Clears the last correlation, and then sets every packet's journey and hop, in transactions of
// k_packet_rows_per_transaction rows. Until save() ends, meta holds no correlated_ns: a correlate killed in between
// leaves a database that report calls "not correlated yet".
void save_assignments(store::Database& db, std::span<const Sighting> sightings, const Journeys& journeys,
                      const Analysis& a) {
    {
        store::Transaction txn(db);
        db.exec(
            "DELETE FROM meta WHERE key = 'correlated_ns';"
            "DELETE FROM losses; DELETE FROM hops; DELETE FROM nat_rewrites; DELETE FROM journeys; DELETE FROM flows;"
            // Rebuilt by build_indexes once the journeys are written: cheaper than a million index updates.
            "DROP INDEX IF EXISTS packets_journey;"
            "UPDATE points SET path_order = NULL;");
        txn.commit();
    }
    std::int64_t max_id = 0;
    {
        auto last = db.prepare("SELECT coalesce(max(id), 0) FROM packets");
        if (last.step()) max_id = last.column_int(0);
    }
    auto clear = db.prepare(
        "UPDATE packets SET journey_id = NULL, hop = NULL WHERE id >= ? AND id < ? AND journey_id IS NOT NULL");
    for (std::int64_t from = 0; from <= max_id; from += static_cast<std::int64_t>(k_packet_rows_per_transaction)) {
        store::Transaction txn(db);
        clear.bind(1, from).bind(2, from + static_cast<std::int64_t>(k_packet_rows_per_transaction));
        clear.run();
        clear.reset();
        txn.commit();
    }
    // Rows are updated in rowid order: the packets table holds the raw frames, and visiting it in journey
    // order would touch its pages at random.
    std::vector<std::array<std::int64_t, 3>> assignments;  // packet id, journey id, hop (-1: an observer, NULL)
    assignments.reserve(journeys.members.size() + a.observers.members.size());
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        for (std::size_t hop = 0; hop < members.size(); ++hop)
            assignments.push_back(
                {sightings[members[hop]].packet_id, static_cast<std::int64_t>(j + 1), static_cast<std::int64_t>(hop)});
    }
    append_observers(sightings, a, assignments);
    std::sort(assignments.begin(), assignments.end());
    auto packet = db.prepare("UPDATE packets SET journey_id = ?, hop = ? WHERE id = ?");
    for (std::size_t start = 0; start < assignments.size(); start += k_packet_rows_per_transaction) {
        const std::size_t end = std::min(assignments.size(), start + k_packet_rows_per_transaction);
        store::Transaction txn(db);
        for (std::size_t i = start; i < end; ++i) {
            const auto& [packet_id, journey_id, hop] = assignments[i];
            packet.bind(1, journey_id).bind(3, packet_id);
            if (hop < 0) packet.bind_null(2);
            else packet.bind(2, hop);
            packet.run();
            packet.reset();
        }
        txn.commit();
    }
}

void save(store::Database& db, std::span<const Sighting> sightings, const Journeys& journeys, const Analysis& a) {
    save_assignments(db, sightings, journeys, a);
    store::Transaction txn(db);

    auto flow = db.prepare(
        "INSERT INTO flows (id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, "
        "trans_sport, trans_dport, packets, journeys, first_ts_ns, last_ts_ns) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (std::size_t i = 0; i < a.flows.size(); ++i) {
        const Flow& f = a.flows[i];
        flow.bind(1, static_cast<std::int64_t>(i + 1)).bind(2, std::int64_t{f.original.proto});
        bind_tuple(flow, 3, f.original);
        bind_tuple(flow, 7, f.translated);
        flow.bind(11, static_cast<std::int64_t>(f.packets))
            .bind(12, static_cast<std::int64_t>(f.journeys))
            .bind(13, f.first_ts_ns)
            .bind(14, f.last_ts_ns);
        flow.run();
        flow.reset();
    }

    auto journey = db.prepare(
        "INSERT INTO journeys (id, flow_id, direction, fingerprint, sightings, first_point, last_point, "
        "first_ts_ns, last_ts_ns, related_id, relation, ambiguous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (std::size_t j = 0; j < journeys.count(); ++j) {
        const auto members = journeys.of(j);
        const Sighting& first = sightings[members.front()];
        const Sighting& last = sightings[members.back()];
        const auto id = static_cast<std::int64_t>(j + 1);
        journey.bind(1, id)
            .bind(2, static_cast<std::int64_t>(a.journeys[j].flow) + 1)
            .bind(3, to_string(a.journeys[j].direction))
            .bind(4, static_cast<std::int64_t>(first.fingerprint))
            .bind(5, static_cast<std::int64_t>(members.size() + a.observers.of(j).size()))
            .bind(6, std::int64_t{first.point})
            .bind(7, std::int64_t{last.point})
            .bind(8, first.ts_ns)
            .bind(9, last.ts_ns)
            .bind(12, static_cast<std::int64_t>(j < journeys.ambiguous.size() ? journeys.ambiguous[j] : 0));
        if (const JourneyInfo& info = a.journeys[j]; info.relation != Relation::none) {
            journey.bind(10, static_cast<std::int64_t>(info.related) + 1).bind(11, to_string(info.relation));
        } else {
            journey.bind_null(10).bind_null(11);
        }
        journey.run();
        journey.reset();
    }
    auto rewrite = db.prepare(
        "INSERT INTO nat_rewrites (flow_id, direction, field, from_value, to_value, from_point, to_point, packets) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    for (const Rewrite& r : a.rewrites) {
        rewrite.bind(1, static_cast<std::int64_t>(r.flow) + 1)
            .bind(2, to_string(r.direction))
            .bind(3, field_name(r.field, a.flows[r.flow].original.is_icmp()))
            .bind(4, r.from)
            .bind(5, r.to)
            .bind(6, std::int64_t{r.from_point})
            .bind(7, std::int64_t{r.to_point})
            .bind(8, static_cast<std::int64_t>(r.packets));
        rewrite.run();
        rewrite.reset();
    }

    auto hop = db.prepare(
        "INSERT INTO hops (flow_id, direction, from_point, to_point, count, min_ns, p50_ns, p90_ns, p99_ns, max_ns) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (const HopStats& h : a.hops) {
        if (h.flow) hop.bind(1, static_cast<std::int64_t>(*h.flow) + 1);
        else hop.bind_null(1);
        hop.bind(2, to_string(h.direction))
            .bind(3, std::int64_t{h.from_point})
            .bind(4, std::int64_t{h.to_point})
            .bind(5, static_cast<std::int64_t>(h.count))
            .bind(6, h.min_ns)
            .bind(7, h.p50_ns)
            .bind(8, h.p90_ns)
            .bind(9, h.p99_ns)
            .bind(10, h.max_ns);
        hop.run();
        hop.reset();
    }

    auto loss = db.prepare(
        "INSERT INTO losses (flow_id, direction, after_point, expected_point, count, cause, error_journey, "
        "evidence_id, "
        "outside_window) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (const Loss& l : a.losses) {
        loss.bind(1, static_cast<std::int64_t>(l.flow) + 1)
            .bind(2, to_string(l.direction))
            .bind(3, std::int64_t{l.after_point})
            .bind(4, std::int64_t{l.expected_point})
            .bind(5, static_cast<std::int64_t>(l.count))
            .bind(6, to_string(l.cause));
        if (l.icmp_error) loss.bind(7, static_cast<std::int64_t>(*l.icmp_error) + 1);
        else loss.bind_null(7);
        if (l.evidence) loss.bind(8, static_cast<std::int64_t>(*l.evidence) + 1);
        else loss.bind_null(8);
        loss.bind(9, static_cast<std::int64_t>(l.outside_window));
        loss.run();
        loss.reset();
    }

    db.set_meta("correlated_ns", std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                    std::chrono::system_clock::now().time_since_epoch())
                                                    .count()));
    auto order = db.prepare("UPDATE points SET path_order = ? WHERE id = ?");
    for (std::size_t i = 0; i < a.path_order.size(); ++i) {
        order.bind(1, static_cast<std::int64_t>(i)).bind(2, std::int64_t{a.path_order[i]});
        order.run();
        order.reset();
    }
    txn.commit();
}

// The kernel's own NAT translations, from the conntrack dumps of a live capture: the original tuple becomes the
// reply tuple reversed. For ICMP echo the id is in sport (the matcher's tuple), and dport is 0.
std::vector<std::pair<Tuple, Tuple>> kernel_translations(store::Database& db) {
    std::vector<std::pair<Tuple, Tuple>> out;
    auto q = db.prepare(
        "SELECT DISTINCT proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst, reply_sport, "
        "reply_dport FROM conntrack");
    AddressCache addresses;
    while (q.step()) {
        Tuple original;
        original.proto = static_cast<std::uint8_t>(q.column_int(0));
        original.src = addresses.get(q.column_text(1));
        original.dst = addresses.get(q.column_text(2));
        original.sport = static_cast<std::uint16_t>(q.column_int(3));
        Tuple translated;
        translated.proto = original.proto;
        translated.src = addresses.get(q.column_text(6));
        translated.dst = addresses.get(q.column_text(5));
        if (original.is_icmp()) {
            translated.sport = static_cast<std::uint16_t>(q.column_int(7));
        } else {
            original.dport = static_cast<std::uint16_t>(q.column_int(4));
            translated.sport = static_cast<std::uint16_t>(q.column_int(8));
            translated.dport = static_cast<std::uint16_t>(q.column_int(7));
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
    auto windows = db.prepare("SELECT point_id, min(ts_ns), max(ts_ns) FROM packets GROUP BY point_id");
    while (windows.step())
        options.point_windows[static_cast<std::uint32_t>(windows.column_int(0))] = {windows.column_int(1),
                                                                                    windows.column_int(2)};
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
    summary.sightings = sightings.size();
    summary.journeys = journeys.count();
    summary.flows = analysis.flows.size();
    summary.rewrites = analysis.rewrites.size();
    summary.losses = analysis.losses.size();
    summary.ambiguous = static_cast<std::uint64_t>(std::count(journeys.ambiguous.begin(), journeys.ambiguous.end(), 1));
    return summary;
}

}  // namespace hoptrace::correlate
