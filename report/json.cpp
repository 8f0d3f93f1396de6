#include "report/json.hpp"

#include "report/format.hpp"

namespace hoptrace::report {
namespace {

using Json = nlohmann::ordered_json;

template <typename T, typename F>
Json array_of(const std::vector<T>& items, F&& item) {
    Json a = Json::array();
    for (const T& x : items) a.push_back(item(x));
    return a;
}

Json strings(const std::vector<std::string>& items) {
    return array_of(items, [](const std::string& s) { return Json(s); });
}

// icmp {"src", "dst", "id"}, others {"src", "dst", "sport", "dport"}.
Json tuple_json(std::int64_t proto, const Tuple& t) {
    Json j;
    j["src"] = t.src;
    j["dst"] = t.dst;
    if (is_icmp(proto)) {
        j["id"] = t.sport;
    } else {
        j["sport"] = t.sport;
        j["dport"] = t.dport;
    }
    return j;
}

Json point_json(const Point& p) {
    Json j;
    j["name"] = p.name;
    j["netns"] = p.netns;
    j["ifname"] = p.ifname;
    j["role"] = hoptrace::to_string(p.role);
    j["packets"] = p.packets;
    j["kernel_drops"] = p.kernel_drops;
    if (p.path_order) j["path_order"] = *p.path_order;
    j["source"] = p.source;
    if (!p.note.empty()) j["note"] = p.note;
    j["role_evidence"] = p.role_evidence;
    if (!p.complete) j["complete"] = false;  // only said when not: an interrupted import cut the point short
    if (p.container) {
        Json c;
        c["name"] = p.container->name;
        c["id"] = p.container->id;
        c["image"] = p.container->image;
        c["networks"] = p.container->networks;
        c["ports"] = p.container->ports;
        j["container"] = std::move(c);
    }
    return j;
}

Json firewall_rule_json(const FirewallRule& r) {
    Json j;
    j["netns"] = r.netns;
    j["family"] = r.family;
    j["table"] = r.table;
    j["chain"] = r.chain;
    j["rule"] = r.rule;
    if (r.policy) j["policy"] = true;
    j["verdict"] = r.verdict;
    j["packets"] = r.packets;
    return j;
}

Json rewrite_json(const Rewrite& r) {
    auto value = [&](const std::string& v) { return r.numeric() ? Json(std::stoll(v)) : Json(v); };
    Json j;
    j["field"] = r.field;
    j["from"] = value(r.from);
    j["to"] = value(r.to);
    j["between"] = Json::array({r.from_point, r.to_point});
    j["direction"] = correlate::to_string(r.direction);
    j["packets"] = r.packets;
    if (r.rule) j["rule"] = firewall_rule_json(*r.rule);
    return j;
}

Json hop_json(const HopStats& h) {
    Json j;
    j["from"] = h.from;
    j["to"] = h.to;
    j["direction"] = correlate::to_string(h.direction);
    j["count"] = h.count;
    j["min_ns"] = h.min_ns;
    j["p50_ns"] = h.p50_ns;
    j["p90_ns"] = h.p90_ns;
    j["p99_ns"] = h.p99_ns;
    j["max_ns"] = h.max_ns;
    return j;
}

Json loss_json(const Loss& l) {
    Json j;
    j["after"] = l.after;
    j["expected"] = l.expected;
    j["direction"] = correlate::to_string(l.direction);
    j["count"] = l.count;
    j["cause"] = correlate::to_string(l.cause);
    j["kernel_drops_at_expected"] = l.kernel_drops_at_expected;
    if (l.outside_window > 0) j["outside_window"] = l.outside_window;
    if (l.evidence) {
        Json e;
        e["type"] = l.evidence->type;
        e["code"] = l.evidence->code;
        e["reporter"] = l.evidence->reporter;
        if (l.evidence->mtu != 0) e["mtu"] = l.evidence->mtu;
        j["evidence"] = std::move(e);
    }
    if (!l.rules.empty()) j["rules"] = array_of(l.rules, firewall_rule_json);
    if (!l.probable_rules.empty())
        j["probable_rules"] = array_of(l.probable_rules, [](const FirewallRule& r) {
            Json p;
            p["netns"] = r.netns;
            p["family"] = r.family;
            p["table"] = r.table;
            p["chain"] = r.chain;
            p["rule"] = r.rule;
            p["counter"] = r.packets;
            return p;
        });
    return j;
}

Json segmentation_json(const Segmentation& g) {
    Json j;
    j["between"] = Json::array({g.from, g.to});
    j["direction"] = correlate::to_string(g.direction);
    j["super_packets"] = g.super_packets;
    j["segments"] = g.segments;
    j["max_super_packet_bytes"] = g.max_super_packet_bytes;
    j["max_segment_bytes"] = g.max_segment_bytes;
    return j;
}

Json conntrack_json(std::int64_t proto, const Conntrack& c) {
    Json j;
    if (c.entry) {
        j["original"] = tuple_json(proto, c.entry->original);
        j["reply"] = tuple_json(proto, c.entry->reply);
        j["translated"] = tuple_json(proto, c.entry->translated);
    }
    j["state"] = to_string(c.state);
    return j;
}

Json pmtu_json(const PathMtu& p) {
    Json j;
    j["lost_min_size"] = p.lost_min_size;
    j["passed_max_size"] = p.passed_max_size;
    j["mtu"] = p.mtu ? Json(*p.mtu) : Json(nullptr);
    j["reporter"] = p.reporter ? Json(*p.reporter) : Json(nullptr);
    j["frag_needed"] = to_string(p.frag_needed);
    j["after"] = p.after;
    if (p.arrived_on) j["arrived_on"] = *p.arrived_on;
    return j;
}

Json flow_json(const Flow& f) {
    Json j;
    j["id"] = f.id;
    j["proto"] = proto_name(f.proto);
    j["original"] = tuple_json(f.proto, f.original);
    j["translated"] = tuple_json(f.proto, f.translated);
    j["rewrites"] = array_of(f.rewrites, rewrite_json);
    if (!f.published.empty()) j["published"] = f.published;
    if (f.relay) {
        Json r;
        r["by"] = "docker-proxy";
        r["pid"] = f.relay->pid;
        r["listens"] = f.relay->listens;
        r["to"] = f.relay->to;
        r["side"] = f.relay->side;
        if (f.relay->peer_flow) r["peer_flow"] = *f.relay->peer_flow;
        if (f.relay->undecided > 0) r["undecided"] = f.relay->undecided;
        j["relay"] = std::move(r);
    }
    j["packets"] = f.packets;
    j["journeys"] = f.journeys;
    j["forward_journeys"] = f.forward_journeys;
    j["reply_journeys"] = f.reply_journeys;
    j["repeated_journeys"] = {{"forward", f.repeated_forward}, {"reply", f.repeated_reply}};
    j["first_ts_ns"] = f.first_ts_ns;
    j["last_ts_ns"] = f.last_ts_ns;
    j["path"] = strings(f.path);
    j["hops"] = array_of(f.hops, hop_json);
    j["lost"] = array_of(f.lost, loss_json);
    j["observers"] = array_of(f.observers, [](const Observer& o) {
        return Json{{"point", o.point},
                    {"direction", correlate::to_string(o.direction)},
                    {"count", o.count},
                    {"between", strings(o.between)}};
    });
    j["segmentation"] = array_of(f.segmentation, segmentation_json);
    if (f.conntrack) j["conntrack"] = conntrack_json(f.proto, *f.conntrack);
    j["icmp_errors"] = array_of(f.icmp_errors, [](const IcmpAnswer& a) {
        return Json{{"icmp", proto_name(a.icmp)}, {"type", a.type}, {"code", a.code}, {"reporter", a.reporter}};
    });
    j["ambiguous"] = f.ambiguous;
    j["copies"] = f.copies;
    if (f.copies_interfaces) j["copies_interfaces"] = *f.copies_interfaces;
    if (f.fragments) j["fragments"] = {{"datagrams", f.fragments->datagrams}, {"fragments", f.fragments->fragments}};
    if (f.pmtu) j["pmtu"] = pmtu_json(*f.pmtu);
    return j;
}

Json icmp_error_json(const IcmpError& e) {
    Json j;
    j["type"] = e.type;
    j["code"] = e.code;
    j["reporter"] = e.reporter;
    j["icmp"] = proto_name(e.icmp);
    j["journey"] = e.journey;
    j["flow"] = e.flow;
    if (e.probe_journey) j["probe_journey"] = *e.probe_journey;
    j["path"] = strings(e.path);
    Json p;
    p["proto"] = proto_name(e.probe.proto);
    p["src"] = e.probe.src;
    p["dst"] = e.probe.dst;
    p["sport"] = e.probe.sport;
    p["dport"] = e.probe.dport;
    p["ttl"] = e.probe.ttl;
    if (e.probe.sent_ttl) p["sent_ttl"] = *e.probe.sent_ttl;
    j["probe"] = std::move(p);
    j["lost"] = array_of(e.lost, [](const ErrorLoss& l) {
        return Json{{"after", l.after}, {"expected", l.expected}, {"count", l.count}};
    });
    if (e.mtu != 0) j["mtu"] = e.mtu;
    return j;
}

Json trace_probe_json(const TraceProbe& p) {
    Json j;
    j["journey"] = p.journey;
    j["flow"] = p.flow;
    j["path"] = strings(p.path);
    if (!p.answer) return j;
    const TraceAnswer& a = *p.answer;
    Json answer;
    answer["journey"] = a.journey;
    answer["kind"] = a.kind;
    answer["reporter"] = a.reporter;
    answer["destination"] = a.destination;
    answer["path"] = strings(a.path);
    if (a.quoted) {
        answer["quoted"] = array_of(*a.quoted, [](const QuotedTuple& q) {
            Json t = q.known ? tuple_json(q.proto, q.tuple) : Json();
            if (q.known) t["proto"] = proto_name(q.proto);
            t["at"] = q.at;
            return t;
        });
    }
    j["answer"] = std::move(answer);
    j["rtt"] = array_of(p.rtt, [](const RoundTrip& r) { return Json{{"point", r.point}, {"ns", r.ns}}; });
    return j;
}

Json traceroute_json(const Traceroute& t) {
    Json j;
    j["proto"] = proto_name(t.proto);
    j["src"] = t.src;
    j["dst"] = t.dst;
    j["probes"] = t.probes;
    j["hops"] = array_of(t.hops, [](const TraceHop& h) {
        Json row;
        row["ttl"] = h.ttl;
        row["reporters"] = strings(h.reporters);
        row["answered"] = h.answered;
        row["reached_destination"] = h.reached_destination;
        row["probes"] = array_of(h.probes, trace_probe_json);
        return row;
    });
    j["reached_destination"] = t.reached_destination;
    j["later_probes"] = {{"probes", t.later_probes.probes},
                         {"answered", t.later_probes.answered},
                         {"min_ttl", t.later_probes.min_ttl},
                         {"max_ttl", t.later_probes.max_ttl}};
    return j;
}

}  // namespace

Json to_json(const ReportModel& m) {
    Json report;
    report["schema"] = k_report_schema;
    report["points"] = array_of(m.points, point_json);
    report["flows"] = array_of(m.flows, flow_json);
    report["icmp_errors"] = array_of(m.icmp_errors, icmp_error_json);
    report["hop_totals"] = array_of(m.hop_totals, hop_json);
    report["traceroutes"] = array_of(m.traceroutes, traceroute_json);
    report["ambiguous_journeys"] = m.ambiguous_journeys;
    if (m.rule_traces) {
        Json t;
        t["events"] = m.rule_traces->events;
        t["walks"] = m.rule_traces->walks;
        t["tied"] = m.rule_traces->tied;
        t["untied"] = m.rule_traces->walks - m.rule_traces->tied;
        t["packets"] = m.rule_traces->packets;
        t["lost_events"] = m.rule_traces->overflows;
        report["rule_traces"] = std::move(t);
    }
    if (m.flow_filter) report["flow_filter"] = *m.flow_filter;
    return report;
}

std::string render_json(const ReportModel& m) {
    return to_json(m).dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace hoptrace::report
