#include "report/text.hpp"

#include "report/format.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <string_view>

namespace hoptrace::report {
namespace {

constexpr FlowDirection k_forward = FlowDirection::forward;
constexpr FlowDirection k_reply = FlowDirection::reply;

const char* name(FlowDirection d) { return correlate::to_string(d); }

// ---------------------------------------------------------------------------------------------------------------
// Captured names go to a terminal: control characters in them (ESC could retitle or reprogram it, a newline would
// split a table row) are shown escaped, \x1b, \n. Every string of the model is data; the layout is the renderer's.

std::string printable(const std::string& s) {
    std::string out;
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u != 0x7f) {
            out += c;
            continue;
        }
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", u);
        out += u == '\n' ? "\\n" : u == '\t' ? "\\t" : buf;
    }
    return out;
}

void make_printable(std::string& s) { s = printable(s); }
void make_printable(std::vector<std::string>& v) {
    for (std::string& s : v) make_printable(s);
}
void make_printable(Tuple& t) {
    make_printable(t.src);
    make_printable(t.dst);
}
void make_printable(std::optional<std::string>& s) {
    if (s) make_printable(*s);
}

void make_printable(FirewallRule& r) {
    for (std::string* s : {&r.netns, &r.family, &r.table, &r.chain, &r.rule, &r.verdict}) make_printable(*s);
}

void make_printable(Flow& f) {
    make_printable(f.original);
    make_printable(f.translated);
    for (Rewrite& r : f.rewrites) {
        for (std::string* s : {&r.field, &r.from, &r.to, &r.from_point, &r.to_point}) make_printable(*s);
        if (r.rule) make_printable(*r.rule);
    }
    make_printable(f.path);
    make_printable(f.published);
    if (f.relay) {
        make_printable(f.relay->listens);
        make_printable(f.relay->to);
    }
    for (HopStats& h : f.hops) {
        make_printable(h.from);
        make_printable(h.to);
    }
    for (Loss& l : f.lost) {
        make_printable(l.after);
        make_printable(l.expected);
        if (l.evidence) make_printable(l.evidence->reporter);
        for (FirewallRule& r : l.rules) make_printable(r);
        for (FirewallRule& r : l.probable_rules) make_printable(r);
    }
    for (Observer& o : f.observers) {
        make_printable(o.point);
        make_printable(o.between);
    }
    for (Segmentation& g : f.segmentation) {
        make_printable(g.from);
        make_printable(g.to);
    }
    if (f.conntrack && f.conntrack->entry) {
        for (Tuple* t : {&f.conntrack->entry->original, &f.conntrack->entry->reply, &f.conntrack->entry->translated})
            make_printable(*t);
    }
    for (IcmpAnswer& a : f.icmp_errors) make_printable(a.reporter);
    if (f.pmtu) {
        make_printable(f.pmtu->after);
        make_printable(f.pmtu->reporter);
        make_printable(f.pmtu->arrived_on);
    }
}

void make_printable(Traceroute& t) {
    make_printable(t.src);
    make_printable(t.dst);
    for (TraceHop& h : t.hops) {
        make_printable(h.reporters);
        for (TraceProbe& p : h.probes) {
            make_printable(p.path);
            for (RoundTrip& r : p.rtt) make_printable(r.point);
            if (!p.answer) continue;
            make_printable(p.answer->kind);
            make_printable(p.answer->reporter);
            make_printable(p.answer->path);
            if (p.answer->quoted) {
                for (QuotedTuple& q : *p.answer->quoted) {
                    make_printable(q.tuple);
                    make_printable(q.at);
                }
            }
        }
    }
}

ReportModel printable_copy(ReportModel m) {
    for (Point& p : m.points) {
        for (std::string* s : {&p.name, &p.netns, &p.ifname, &p.source, &p.note, &p.role_evidence}) make_printable(*s);
        if (p.container) {
            for (std::string* s : {&p.container->name, &p.container->id, &p.container->image}) make_printable(*s);
            make_printable(p.container->networks);
            make_printable(p.container->ports);
        }
    }
    for (Flow& f : m.flows) make_printable(f);
    for (IcmpError& e : m.icmp_errors) {
        make_printable(e.reporter);
        make_printable(e.path);
        make_printable(e.probe.src);
        make_printable(e.probe.dst);
        for (ErrorLoss& l : e.lost) {
            make_printable(l.after);
            make_printable(l.expected);
        }
    }
    for (HopStats& h : m.hop_totals) {
        make_printable(h.from);
        make_printable(h.to);
    }
    for (Traceroute& t : m.traceroutes) make_printable(t);
    make_printable(m.flow_filter);
    return m;
}

// ---------------------------------------------------------------------------------------------------------------
// Layout.

// Word-wraps `text` at `width` display columns, each line indented.
std::string wrap(const std::string& text, const std::string& indent, std::size_t width) {
    std::string out;
    std::string line;
    std::size_t columns = 0;
    std::istringstream words(text);
    for (std::string w; words >> w;) {
        const std::size_t n = display_width(w);
        if (!line.empty() && columns + 1 + n > width) {
            out += indent + line + "\n";
            line.clear();
            columns = 0;
        }
        if (!line.empty()) {
            line += ' ';
            ++columns;
        }
        line += w;
        columns += n;
    }
    if (!line.empty()) out += indent + line + "\n";
    return out;
}

std::string joined(const std::vector<std::string>& items, const char* separator) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) out.append(i ? separator : "").append(items[i]);
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Words.

std::string tuple_text(std::int64_t proto, const Tuple& t) {
    if (is_icmp(proto)) return t.src + " → " + t.dst + " id " + std::to_string(t.sport);
    auto endpoint = [](const std::string& addr, std::int64_t port) {
        const bool v6 = addr.find(':') != std::string::npos;
        return (v6 ? "[" + addr + "]" : addr) + ":" + std::to_string(port);
    };
    if (has_ports(proto)) return endpoint(t.src, t.sport) + " → " + endpoint(t.dst, t.dport);
    return t.src + " → " + t.dst;
}

// The source side of a tuple as the narrative says it: "192.168.43.116:1252", or "… id 48338" for ICMP.
std::string source_text(std::int64_t proto, const Tuple& t) {
    if (is_icmp(proto)) return t.src + " id " + std::to_string(t.sport);
    if (has_ports(proto)) return t.src + ":" + std::to_string(t.sport);
    return t.src;
}
std::string destination_text(std::int64_t proto, const Tuple& t) {
    if (has_ports(proto)) return t.dst + ":" + std::to_string(t.dport);
    return t.dst;
}

std::string icmp_name(std::int64_t icmp, std::int64_t type, std::int64_t code) {
    return icmp_error_name(icmp == 58 ? 58 : 1, type, code);
}

// The bridge that switched the flow's forward packets from port `from` to port `to` ("" when none did).
std::string observer_between(const Flow& flow, const std::string& from, const std::string& to) {
    for (const Observer& o : flow.observers)
        if (o.direction == k_forward && o.between == std::vector<std::string>{from, to}) return o.point;
    return "";
}

// One loss line: what ended the packets, and whether the capture itself could have missed them.
std::string loss_text(const Loss& l) {
    const std::string dir = name(l.direction);
    const std::string n = counted(l.count, dir + " packet", dir + " packets");  // "1 forward packet", "3 reply packets"
    if (l.cause == LossCause::expired)
        return "EXPIRED: " + n + " after " + l.after + " (TTL ran out: answered by time exceeded)";
    if (l.cause == LossCause::rejected) return "REJECTED: " + n + " after " + l.after + ", answered by an ICMP error";
    std::string text = "LOST: " + n + " after " + l.after + ", never seen at " + l.expected;
    const std::int64_t drops = l.kernel_drops_at_expected;
    text += drops == 0 ? " (no capture drops at " + l.expected + ": the network dropped them)"
                       : " (" + std::to_string(drops) + " capture drops at " + l.expected + " might explain it)";
    if (l.outside_window > 0)
        text += "; " + std::to_string(l.outside_window) + " of them while " + l.expected +
                "'s file shows no packet yet (or any more): it is taken to have captured along with the other files";
    for (const FirewallRule& r : l.rules)
        text += "; " +
                std::string(r.verdict == "drop"    ? "dropped"
                            : r.verdict == "queue" ? "queued"
                                                   : "stolen") +
                " by " + rule_text(r) + " (" + counted(r.packets, "traced packet", "traced packets") + ")";
    if (!l.probable_rules.empty()) {
        text += "; probably dropped by ";
        for (std::size_t i = 0; i < l.probable_rules.size() && i < 3; ++i)
            text += (i > 0 ? " or " : "") + rule_text(l.probable_rules[i]) + " (its counter moved by " +
                    std::to_string(l.probable_rules[i].packets) + ")";
        text += " — an inference from the rules' counters; --trace-rules would tell";
    }
    return text;
}

// Packets of the flow lost in `direction` (not counting those an ICMP error answered).
std::int64_t lost_count(const Flow& flow, FlowDirection direction) {
    std::int64_t n = 0;
    for (const Loss& l : flow.lost)
        if (l.direction == direction && l.cause == LossCause::dropped) n += l.count;
    return n;
}

// " 4 segments were retransmitted (3 forward, 1 reply)." or "".
std::string repeats_text(const Flow& flow, bool tcp) {
    const std::int64_t fwd = flow.repeated_forward;
    const std::int64_t rep = flow.repeated_reply;
    if (fwd + rep == 0) return "";
    const std::string what = tcp ? (fwd + rep == 1 ? " segment was " : " segments were ")
                                 : (fwd + rep == 1 ? " packet was " : " packets were ");
    return " " + std::to_string(fwd + rep) + what + (tcp ? "retransmitted" : "duplicated") + " (" +
           std::to_string(fwd) + " forward, " + std::to_string(rep) +
           " reply), each its own journey tied to the one it "
           "repeats.";
}

// " 6 were answered by ICMP errors instead (time exceeded from 172.17.0.1 and 192.168.43.1)." or "".
std::string answered_by_errors(const Flow& flow) {
    const auto& answers = flow.icmp_errors;
    if (answers.empty()) return "";
    std::vector<std::string> kinds;
    for (const IcmpAnswer& e : answers) {
        const std::string k = icmp_name(e.icmp, e.type, e.code) + " from " + e.reporter;
        if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
    }
    std::string text = " " + std::to_string(answers.size()) + (answers.size() == 1 ? " was" : " were") +
                       " answered by " + (answers.size() == 1 ? "an ICMP error" : "ICMP errors") + " instead (";
    for (std::size_t i = 0; i < kinds.size(); ++i)
        text += (i == 0 ? "" : i + 1 == kinds.size() ? " and " : ", ") + kinds[i];
    return text + ").";
}

// "  observed by docker0 (bridge-local: switched between vethA and vethB, not a hop): 3 forward, 3 reply"
std::string observers_text(const Flow& flow) {
    std::map<std::string, std::pair<std::string, std::string>> seen;  // point -> (switched between, counts)
    for (const Observer& o : flow.observers) {
        auto& [between, counts] = seen[o.point];
        if (between.empty() && o.between.size() == 2) between = o.between[0] + " and " + o.between[1];
        counts += (counts.empty() ? "" : ", ") + std::to_string(o.count) + " " + name(o.direction);
    }
    std::string out;
    for (const auto& [point, text] : seen) {
        const std::string between = text.first.empty() ? "" : " between " + text.first;
        out += "  observed by " + point + " (bridge-local: switched" + between + ", not a hop): " + text.second + "\n";
    }
    return out;
}

std::string size_text(std::int64_t bytes) {
    if (bytes < 10240) return std::to_string(bytes) + " bytes";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
    return buf;
}

// "295 super-packets (up to 35.4 KiB) were cut into 2973 segments (up to 1500 bytes) between docker0 and uplink
// (GSO/TSO)." per direction and pair of points.
std::string segmentation_text(const Flow& flow) {
    std::string text;
    for (const Segmentation& g : flow.segmentation) {
        const std::int64_t supers = g.super_packets;
        const std::int64_t segments = g.segments;
        text += std::string(" ") + (g.direction == k_reply ? "On the way back, " : "") + std::to_string(supers) +
                (supers == 1 ? " super-packet" : " super-packets") + " (up to " + size_text(g.max_super_packet_bytes) +
                ") " + (supers == 1 ? "was" : "were") + " cut into " + std::to_string(segments) +
                (segments == 1 ? " segment" : " segments") + " (up to " + size_text(g.max_segment_bytes) +
                ") between " + g.from + " and " + g.to + " (GSO/TSO).";
    }
    return text;
}

// ", was masqueraded to … on eth0 27.7 µs later": the step from path[i - 1] to path[i].
std::string step_text(const Flow& flow, const std::map<std::string, const Point*>& point, std::size_t i,
                      const std::map<std::pair<std::string, std::string>, std::pair<std::int64_t, std::int64_t>>& hop,
                      std::int64_t& samples) {
    const std::string& from = flow.path[i - 1];
    const std::string& to = flow.path[i];
    const auto it = hop.find({from, to});
    const std::string t = it == hop.end() ? "?" : format_duration(it->second.first);
    if (it != hop.end()) samples = std::max(samples, it->second.second);
    bool snat = false;
    bool dnat = false;
    for (const Rewrite& r : flow.rewrites) {
        if (r.direction != k_forward || r.from_point != from || r.to_point != to) continue;
        snat = snat || r.field == "src" || r.field == "sport" || r.field == "id";
        dnat = dnat || r.field == "dst" || r.field == "dport";
    }
    const auto p = point.find(to);
    const Role role = p == point.end() ? Role::other : p->second->role;
    const std::string observer = observer_between(flow, from, to);
    std::string text = i + 1 == flow.path.size() && flow.path.size() > 2 ? ", and " : ", ";
    if (snat)
        text += "was masqueraded to " + source_text(flow.proto, flow.translated) + " on " + to + " " + t + " later";
    else if (dnat)
        text += "was redirected to " + destination_text(flow.proto, flow.translated) + " on " + to + " " + t + " later";
    else if (!observer.empty()) text += "crossed " + observer + " (bridge-local, no NAT) to " + to + " in " + t;
    else if (role == Role::veth) text += "crossed " + to + " in " + t;
    else if (role == Role::bridge) text += "the bridge " + to + " in " + t;
    else text += "reached " + to + " " + t + " later";
    return text;
}

// After the path: how the reply came back, or what became of packets that got none.
std::string outcome_text(const Flow& flow) {
    const std::int64_t forward = flow.forward_journeys;
    const std::int64_t replies = flow.reply_journeys;
    std::string text;
    if (replies > 0) {
        bool reverse_rewrite = false;
        for (const Rewrite& r : flow.rewrites) reverse_rewrite = reverse_rewrite || r.direction == k_reply;
        text += reverse_rewrite ? " The reply took the reverse path with the reverse rewrite."
                                : " The reply took the reverse path.";
        const std::int64_t lost = lost_count(flow, k_forward) + lost_count(flow, k_reply);
        if (flow.proto == 6) {  // segments and acknowledgements are not one-to-one: no "round trips"
            text += " " + counted(forward, "packet", "packets") + " went forward and " + std::to_string(replies) +
                    " came back; " +
                    (lost == 0 ? std::string("none was lost.")
                               : std::to_string(lost) + (lost == 1 ? " was" : " were") + " lost.");
            text += repeats_text(flow, true);
        } else {
            const std::int64_t round_trips =
                std::min(forward - lost_count(flow, k_forward), replies - lost_count(flow, k_reply));
            text += " " + std::to_string(std::max<std::int64_t>(round_trips, 0)) + " of " +
                    counted(forward, "packet", "packets") + " made the round trip." + answered_by_errors(flow) +
                    repeats_text(flow, false);
        }
        return text;
    }
    const Loss* loss = nullptr;
    for (const Loss& l : flow.lost)
        if (l.direction == k_forward && (loss == nullptr || l.count > loss->count)) loss = &l;
    if (!flow.icmp_errors.empty()) {
        const IcmpAnswer& e = flow.icmp_errors[0];
        text += " It was answered by " + std::string(flow.icmp_errors.size() == 1 ? "an ICMP error" : "ICMP errors") +
                " (" + icmp_name(e.icmp, e.type, e.code) + ") from " + e.reporter + ".";
    } else if (loss != nullptr) {
        const std::int64_t lost = lost_count(flow, k_forward);
        text += " " + std::to_string(lost) + " of " + counted(forward, "packet", "packets") +
                (lost == 1 ? " was" : " were") + " lost after " + loss->after + ", never seen at " + loss->expected +
                "; no reply was seen.";
    } else {
        text += " " + std::to_string(forward) + " of " + counted(forward, "packet", "packets") + " reached " +
                flow.path.back() + "; no reply was seen.";
    }
    return text;
}

// What the report cannot vouch for, per flow ("" when there is nothing to say), each line indented by two.
std::string verdict_lines(const Flow& flow) {
    std::string out;
    if (flow.ambiguous > 0)
        out += "  AMBIGUOUS: " + std::to_string(flow.ambiguous) +
               " journeys of this flow could not be told apart from another flow's (same packet, same time, nothing "
               "to decide by): their path and rewrite are the likeliest, not proven\n";
    if (flow.copies_interfaces)
        out += "  its packets were seen on " + std::to_string(*flow.copies_interfaces) +
               " interfaces of one point (tcpdump -i any without interface names): copies, not duplicates\n";
    else if (flow.copies > 0)
        out += "  " + std::to_string(flow.copies) +
               " copies of packets of other flows, seen on several interfaces of one point (tcpdump -i any without "
               "interface names), not duplicates\n";
    if (flow.fragments)
        out += "  fragmented: " + std::to_string(flow.fragments->fragments) + " fragments of " +
               std::to_string(flow.fragments->datagrams) + " datagrams\n";
    if (flow.pmtu) {
        const PathMtu& p = *flow.pmtu;
        out += "  PMTU: " + std::to_string(p.lost_min_size) + "-byte DF packets ";
        out += p.frag_needed == FragNeeded::dropped_in_host ? "left by " + p.after + " and were refused beyond it"
                                                            : "lost after " + p.after;
        out += ", packets up to " + std::to_string(p.passed_max_size) + " bytes pass; ";
        if (p.frag_needed == FragNeeded::returned)
            out +=
                "frag-needed (MTU " + std::to_string(p.mtu.value_or(0)) + ") came back from " + p.reporter.value_or("");
        else if (p.frag_needed == FragNeeded::none) out += "no frag-needed came back: a PMTU black hole";
        else
            out += "frag-needed arrived on " + p.arrived_on.value_or("") + " but was dropped in the host (MTU " +
                   std::to_string(p.mtu.value_or(0)) + ", from " + p.reporter.value_or("") + ")";
        out += "\n";
    }
    return out;
}

std::string rewrites_text(const Flow& f) {
    if (f.rewrites.empty()) return "  no rewrite\n";
    std::vector<std::vector<std::string>> rows;
    for (const Rewrite& r : f.rewrites)
        rows.push_back(
            {name(r.direction), r.field, r.from + " → " + r.to,
             "between " + r.from_point + " and " + r.to_point + (r.rule ? ", by " + rule_text(*r.rule) : "")});
    std::string out = "  rewrites:\n" + table(rows, "    ", {});
    for (const std::string& port : f.published) out += "  published port: " + port + "\n";
    return out;
}

// "relayed by docker-proxy (pid 1234, 0.0.0.0:8080/tcp → 172.17.0.2:80): …".
std::string relay_text(const Flow& f) {
    if (!f.relay) return "";
    const Relay& r = *f.relay;
    std::string out =
        "  relayed by docker-proxy (pid " + std::to_string(r.pid) + ", " + r.listens + " → " + r.to + "): ";
    const bool client = r.side == "client";
    if (r.peer_flow)
        out += client ? "the proxy's own connection to the container is flow " + std::to_string(*r.peer_flow)
                      : "the proxy opened it for flow " + std::to_string(*r.peer_flow);
    else if (r.undecided > 1)
        out += "the proxy opened it for one of " + std::to_string(r.undecided) +
               " connections that reached it within the second before (which one is not decided)";
    else if (r.undecided == 1)
        out +=
            "the one connection that reached the proxy just before is tied to another of its connections "
            "(which one it opened for it is not decided)";
    else
        out += client ? "the proxy's connection to the container was not seen" : "the client's connection was not seen";
    return out + "\n";
}

std::string hops_text(const Flow& f) {
    if (f.hops.empty()) return "";
    std::vector<std::vector<std::string>> rows{{"direction", "hop", "count", "min", "p50", "p90", "p99", "max"}};
    for (const HopStats& h : f.hops) {
        rows.push_back({name(h.direction), h.from + " → " + h.to, std::to_string(h.count), format_duration(h.min_ns),
                        format_duration(h.p50_ns), format_duration(h.p90_ns), format_duration(h.p99_ns),
                        format_duration(h.max_ns)});
    }
    return "  hop latency:\n" + table(rows, "    ", {false, false, true, true, true, true, true, true});
}

std::string segmentation_table(const Flow& f) {
    if (f.segmentation.empty()) return "";
    std::vector<std::vector<std::string>> rows{
        {"direction", "between", "super-packets", "segments", "largest super-packet", "largest segment"}};
    for (const Segmentation& g : f.segmentation) {
        rows.push_back({name(g.direction), g.from + " → " + g.to, std::to_string(g.super_packets),
                        std::to_string(g.segments), std::to_string(g.max_super_packet_bytes) + " B",
                        std::to_string(g.max_segment_bytes) + " B"});
    }
    return "  segmentation (GSO/TSO):\n" + table(rows, "    ", {false, false, true, true, true, true});
}

std::string conntrack_text(const Flow& f) {
    if (!f.conntrack) return "";
    switch (f.conntrack->state) {
        case ConntrackState::agrees:
            return f.rewrites.empty() ? "  conntrack agrees: the kernel did not translate it either\n"
                                      : "  conntrack agrees: the kernel translated it the same way\n";
        case ConntrackState::differs:
            return "  conntrack DIFFERS: the kernel's entry translates it to " +
                   tuple_text(f.proto, f.conntrack->entry ? f.conntrack->entry->translated : Tuple{}) + "\n";
        case ConntrackState::not_reached:
            return "  conntrack: never reached the NAT point (no uplink saw it)\n";
        case ConntrackState::before_path:
            return "  conntrack: translated before the first point: the host itself sent it as " +
                   tuple_text(f.proto, f.conntrack->entry->original) + ", and its nat OUTPUT chain rewrote it to " +
                   tuple_text(f.proto, f.conntrack->entry->translated) + "\n";
        case ConntrackState::not_found:
            break;
    }
    return "  conntrack: no entry for this flow\n";
}

std::string flow_text(const Flow& f, const std::vector<Point>& points) {
    std::string out =
        "\nFlow " + std::to_string(f.id) + "  " + proto_name(f.proto) + "  " + tuple_text(f.proto, f.original);
    if (f.translated != f.original) out += "  ⇒  " + tuple_text(f.proto, f.translated);
    out += "\n";
    if (const std::string story = narrate(f, points); !story.empty()) out += wrap(story, "  ", 100);
    if (!f.path.empty()) out += "  path: " + joined(f.path, " → ") + "\n";
    out += observers_text(f);
    out += "  " + std::to_string(f.forward_journeys) + " forward and " +
           counted(f.reply_journeys, "reply packet", "reply packets") + ", " +
           counted(f.packets, "sighting", "sightings") + "\n";
    out += rewrites_text(f) + relay_text(f) + hops_text(f) + segmentation_table(f) + conntrack_text(f);
    for (const Loss& l : f.lost) out += "  " + loss_text(l) + "\n";
    return out + verdict_lines(f);
}

std::string icmp_errors_text(const std::vector<IcmpError>& errors) {
    if (errors.empty()) return "";
    std::string out = "\nICMP errors\n";
    for (const IcmpError& e : errors) {
        const Probe& p = e.probe;
        out += "  " + icmp_name(e.icmp, e.type, e.code) + " from " + e.reporter + " about " + proto_name(p.proto) +
               " " + p.src + " → " + p.dst;
        if (p.proto == 17 || p.proto == 6) out += ":" + std::to_string(p.dport);
        if (p.sent_ttl) out += " (sent with ttl " + std::to_string(*p.sent_ttl) + ")";
        if (!e.path.empty()) out += ", back via " + joined(e.path, " → ");
        for (const ErrorLoss& l : e.lost)
            out +=
                "; LOST after " + l.after + ", never seen at " + l.expected + " (the host dropped it on its way back)";
        out += "\n";
    }
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Traceroutes.

std::string endpoint_text(const QuotedTuple& q) {
    std::string s = q.tuple.src;
    if (q.known && !is_icmp(q.proto)) s += ":" + std::to_string(q.tuple.sport);
    s += " → " + q.tuple.dst;
    if (q.known && !is_icmp(q.proto)) s += ":" + std::to_string(q.tuple.dport);
    if (q.known && is_icmp(q.proto)) s += " id " + std::to_string(q.tuple.sport);
    return s;
}

std::int64_t median(std::vector<std::int64_t> v) {
    std::sort(v.begin(), v.end());
    return v[(v.size() - 1) / 2];
}

// One row of the table, and the row's first quote that NAT rewrote on the way back (to `quotes`).
std::vector<std::string> trace_row(const TraceHop& row, std::vector<std::string>& quotes) {
    std::string who;
    const TraceProbe* example = nullptr;  // the longest path among the row's probes
    std::map<std::string, std::vector<std::int64_t>> rtt;
    std::vector<std::string> rtt_order;
    bool quoted = false;  // one example per row
    for (const TraceProbe& p : row.probes) {
        if (example == nullptr || p.path.size() > example->path.size()) example = &p;
        if (!p.answer) continue;
        const TraceAnswer& a = *p.answer;
        const std::string w = a.reporter + " (" + a.kind + (a.destination ? ", destination" : "") + ")";
        if (who.find(w) == std::string::npos) who += (who.empty() ? "" : ", ") + w;
        for (const RoundTrip& r : p.rtt) {
            if (!rtt.contains(r.point)) rtt_order.push_back(r.point);
            rtt[r.point].push_back(r.ns);
        }
        if (quoted || !a.quoted || a.quoted->size() != 2) continue;
        const QuotedTuple& q0 = (*a.quoted)[0];
        const QuotedTuple& q1 = (*a.quoted)[1];
        if (std::tie(q0.known, q0.proto, q0.tuple) == std::tie(q1.known, q1.proto, q1.tuple)) continue;
        quoted = true;
        quotes.push_back("ttl " + std::to_string(row.ttl) + ": quoted " + endpoint_text(q0) + " at " + q0.at + ", " +
                         endpoint_text(q1) + " at " + q1.at);
    }
    std::string passed = example == nullptr ? "" : joined(example->path, " → ");
    if (row.answered > 0 && !row.reached_destination) passed += " (expired)";
    std::string times;
    for (const std::string& point : rtt_order)
        times += (times.empty() ? "" : " · ") + point + " " + format_duration(median(rtt[point]));
    return {std::to_string(row.ttl), who.empty() ? "*" : who,
            std::to_string(row.answered) + "/" + std::to_string(row.probes.size()), passed, times};
}

std::string traceroutes_text(const std::vector<Traceroute>& traceroutes) {
    std::string out;
    for (const Traceroute& t : traceroutes) {
        out += "\nTraceroute  " + proto_name(t.proto) + "  " + t.src + " → " + t.dst + "  (" +
               std::to_string(t.probes) + " probes)\n";
        std::vector<std::vector<std::string>> rows{
            {"ttl", "answered by", "answers", "probe passed", "round trip (median) at each point"}};
        std::vector<std::string> quotes;
        for (const TraceHop& row : t.hops) rows.push_back(trace_row(row, quotes));
        out += table(rows, "  ", {true, false, true, false, false});
        const LaterProbes& later = t.later_probes;
        if (later.probes > 0) {
            out += "  " + std::to_string(later.probes) + " more probes with ttl " + std::to_string(later.min_ttl) +
                   "–" + std::to_string(later.max_ttl) + " were already on their way when the destination answered; " +
                   std::to_string(later.answered) + " of them were answered.\n";
        }
        if (!quotes.empty()) {
            out += "  the errors' quoted probes, as they arrived and after NAT undid its rewrite on the way back:\n";
            for (const std::string& q : quotes) out += "    " + q + "\n";
        }
    }
    return out;
}

}  // namespace

std::string narrate(const Flow& flow, const std::vector<Point>& points) {
    const auto& path = flow.path;
    if (path.empty()) return "";
    std::map<std::string, const Point*> point;
    for (const Point& p : points) point[p.name] = &p;  // the last of a name, as a map assignment keeps it
    std::map<std::pair<std::string, std::string>, std::pair<std::int64_t, std::int64_t>> hop;  // forward p50, count
    for (const HopStats& h : flow.hops)
        if (h.direction == k_forward) hop[{h.from, h.to}] = {h.p50_ns, h.count};
    std::string text = tuple_text(flow.proto, flow.original);
    const std::string& first = path[0];
    const auto p = point.find(first);
    const Role first_role = p == point.end() ? Role::other : p->second->role;
    const std::string first_if = p == point.end() ? "" : p->second->ifname;
    if (first_role == Role::container) {
        text += " left the container on " + (first_if.empty() ? first : first_if);
    } else if (first_role == Role::uplink) {
        text += " arrived on the uplink " + first;
    } else {
        text += " was first seen at " + first;
    }
    std::int64_t samples = 0;
    for (std::size_t i = 1; i < path.size(); ++i) text += step_text(flow, point, i, hop, samples);
    text += ".";
    text += outcome_text(flow);
    text += segmentation_text(flow);
    if (samples > 1) text += " (Times are medians over " + std::to_string(samples) + " packets.)";
    return text;
}

std::string render_text(const ReportModel& given) {
    const ReportModel m = printable_copy(given);
    std::int64_t packets = 0;
    for (const Point& p : m.points) packets += p.packets;
    std::string out = "hoptrace: " + counted(static_cast<std::int64_t>(m.points.size()), "point", "points") + ", " +
                      counted(packets, "packet", "packets") + ", " +
                      counted(static_cast<std::int64_t>(m.flows.size()), "flow", "flows") + "\n\n";
    out += "Points, in path order\n";
    std::vector<std::vector<std::string>> rows{{"#", "point", "role", "netns", "interface", "packets", "drops"}};
    int n = 0;
    for (const Point& p : m.points) {
        rows.push_back({std::to_string(++n), p.name, hoptrace::to_string(p.role), p.netns.empty() ? "-" : p.netns,
                        p.ifname.empty() ? "-" : p.ifname, std::to_string(p.packets), std::to_string(p.kernel_drops)});
    }
    out += table(rows, "  ", {true, false, false, false, false, true, true});
    for (const Point& p : m.points) {
        if (p.container) {
            const ContainerInfo& c = *p.container;
            std::string line = "  " + p.name + ": container " + c.name + " (" + c.id.substr(0, 12) + "), image " +
                               (c.image.empty() ? "?" : c.image);
            for (std::size_t i = 0; i < c.networks.size(); ++i)
                line += (i == 0 ? (c.networks.size() == 1 ? ", network " : ", networks ") : " ") + c.networks[i];
            for (std::size_t i = 0; i < c.ports.size(); ++i) line += (i == 0 ? ", published " : " ") + c.ports[i];
            out += line + "\n";
        }
        if (!p.complete)
            out += "  INCOMPLETE: " + p.name + ": the import of " + p.source + " was interrupted after " +
                   std::to_string(p.packets) + " packets; journeys seem to end there (hoptrace import --replace)\n";
    }
    for (const Flow& f : m.flows) out += flow_text(f, m.points);
    out += icmp_errors_text(m.icmp_errors);
    if (m.ambiguous_journeys > 0)
        out += "\n" + counted(m.ambiguous_journeys, "journey is", "journeys are") +
               " AMBIGUOUS: a sighting could have continued another flow's journey just as well "
               "(journeys.ambiguous = 1; see docs/correlation.md)\n";
    out += traceroutes_text(m.traceroutes);
    if (m.rule_traces) {
        const RuleTraceSummary& t = *m.rule_traces;
        out += "\nFirewall verdicts (--trace-rules): " + counted(t.events, "event", "events") + " in " +
               counted(t.walks, "pass", "passes") + " of a packet through a hook; " + std::to_string(t.tied) +
               " tied to " + counted(t.packets, "packet", "packets") + " of the report";
        if (t.walks > t.tied)
            out += ", " + std::to_string(t.walks - t.tied) +
                   " not (the host's own packets, or headers that fit several packets)";
        if (t.overflows > 0)
            out += "; the kernel could not deliver trace events " + std::to_string(t.overflows) +
                   " times: some verdicts are missing";
        out += "\n";
    }
    return out;
}

}  // namespace hoptrace::report
