#pragma once
// The report model: everything the outputs show, read from the store once by load_report (model.cpp holds the
// only SQL of the report side) into plain typed structs. The renderers — JSON (json.hpp, the contract
// hoptrace-report/1), text (text.hpp), HTML (html/page.hpp) — are free functions over it; the CSV and the pcapng
// export stream from the store through the cursors at the end of this header, so their memory stays flat.
//
// Names: point names are resolved when loading (a point id the store does not know reads "point#ID"). Times are
// nanoseconds. ICMP tuples carry the echo id in `sport` (and `dport` 0).

#include "correlate/analysis.hpp"
#include "report/flow_filter.hpp"
#include "store/database.hpp"
#include "tracer/topology.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

namespace hoptrace::report {

using correlate::FlowDirection;
using correlate::LossCause;
using hoptrace::Role;  // tracer/topology.hpp: container | veth | bridge | uplink | other

inline constexpr const char* k_report_schema = "hoptrace-report/1";

// A flow's or a packet's addresses and ports as the report shows them: for ICMP, sport is the echo id and dport 0.
struct Tuple {
    std::string src;
    std::string dst;
    std::int64_t sport = 0;
    std::int64_t dport = 0;
    auto operator<=>(const Tuple&) const = default;  // NOLINT(modernize-use-nullptr): clang-tidy 14 on <=>
};
// The tuple of protocol `proto` (ICMP: `dport` is dropped, `sport` is the id).
Tuple make_tuple(std::int64_t proto, std::string src, std::string dst, std::int64_t sport, std::int64_t dport);

struct Point {
    std::int64_t id = 0;
    std::string name;
    std::string netns;
    std::string ifname;
    Role role = Role::other;
    std::int64_t packets = 0;
    std::int64_t kernel_drops = 0;
    std::optional<std::int64_t> path_order;
    std::string source;
    std::string note;
    std::string role_evidence;
    bool complete = true;                    // false: an import of its file was interrupted (points.complete = 0)
    std::optional<ContainerInfo> container;  // a --container target's own point: what the engine said
};

// A firewall rule the traced packets met (capture --trace-rules: rule_traces), with how many of them.
struct FirewallRule {
    std::string netns;
    std::string family;  // ip | ip6 | inet | …
    std::string table;
    std::string chain;
    std::string rule;     // as iptables-save prints it (without "-A CHAIN"), or "nft: " and its expressions
    bool policy = false;  // the chain's policy decided (rule is "")
    std::string verdict;  // drop | accept | queue | stolen
    std::int64_t packets = 0;
};

// A connection docker-proxy accepted on a published port (side "client": it reached the host's port without being
// DNATed) and the proxy's own connection to the container ("container"), tied by time: the proxy dials as soon as it
// accepted. peer_flow: the other one; unset when none was seen, or when `undecided` connections could be it.
struct Relay {
    std::int64_t pid = 0;
    std::string listens;  // "0.0.0.0:8080/tcp"
    std::string to;       // "172.17.0.2:80"
    std::string side;     // client | container
    std::optional<std::int64_t> peer_flow;
    std::int64_t undecided = 0;
};

// What --trace-rules traced: events, walks (a packet's way through one hook), how many walks were tied to a
// journey, and how many journeys (packets) those were.
struct RuleTraceSummary {
    std::int64_t events = 0;
    std::int64_t walks = 0;
    std::int64_t tied = 0;
    std::int64_t packets = 0;
    std::int64_t overflows = 0;  // times the kernel could not deliver trace events (lost)
};

struct Rewrite {
    std::string field;  // src | dst | sport | dport | id
    std::string from;   // addresses as stored; ports and ids in decimal
    std::string to;
    std::string from_point;
    std::string to_point;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t packets = 0;
    std::optional<FirewallRule> rule;  // the traced nat rule that did it (forward direction)
    [[nodiscard]] bool numeric() const { return field != "src" && field != "dst"; }
};

struct HopStats {
    std::string from;
    std::string to;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t count = 0;
    std::int64_t min_ns = 0;
    std::int64_t p50_ns = 0;
    std::int64_t p90_ns = 0;
    std::int64_t p99_ns = 0;
    std::int64_t max_ns = 0;
};

// The ICMP error behind an expired or rejected loss.
struct LossEvidence {
    std::int64_t type = 0;
    std::int64_t code = 0;
    std::string reporter;
    std::int64_t mtu = 0;  // 0: the error carries none
};

struct Loss {
    std::string after;
    std::string expected;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t count = 0;
    LossCause cause = LossCause::dropped;
    std::int64_t kernel_drops_at_expected = 0;  // the capture's drops at the point that should have seen them
    std::int64_t outside_window = 0;            // imports: of count, lost while only the other files show capturing
    std::optional<LossEvidence> evidence;
    std::vector<FirewallRule> rules;  // the verdicts that dropped the traced ones (most packets first)
    // Without traced verdicts: the host's drop rules whose counters moved during the capture (packets = how much),
    // nearest to count first — an inference, not proof.
    std::vector<FirewallRule> probable_rules;
    std::int64_t id = 0;  // losses.id
};

// A bridge that saw the flow's frames while switching them between two of its ports: no hop of the flow.
struct Observer {
    std::string point;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t count = 0;
    std::vector<std::string> between;  // the two ports (veth points), in the direction's order; fewer when unknown
};

// GSO/TSO: super-packets seen whole at `from`, as MTU-sized segments from `to` on.
struct Segmentation {
    std::string from;
    std::string to;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t super_packets = 0;
    std::int64_t segments = 0;
    std::int64_t max_super_packet_bytes = 0;
    std::int64_t max_segment_bytes = 0;
};

// before_path: the flow's first sighting is already the kernel's translation of an entry (the host itself sent it,
// and nat OUTPUT rewrote it before the first point: `curl http://HOST-ADDRESS:PUBLISHED-PORT` on the host).
enum class ConntrackState : std::uint8_t { agrees, differs, not_found, not_reached, before_path };
// "agrees", "differs", "not found", "not-reached", "before-path"
const char* to_string(ConntrackState s) noexcept;

// The kernel's NAT of a flow (live captures): conntrack's original and reply tuples, and the translation the reply
// tuple implies (reversed).
struct ConntrackEntry {
    Tuple original;
    Tuple reply;
    Tuple translated;
};
struct Conntrack {
    ConntrackState state = ConntrackState::not_found;
    std::optional<ConntrackEntry> entry;
};

// An ICMP error that answered a flow, as the flow lists it.
struct IcmpAnswer {
    std::int64_t icmp = 1;  // 1 (ICMP) or 58 (ICMPv6)
    std::int64_t type = 0;
    std::int64_t code = 0;
    std::string reporter;
};

enum class FragNeeded : std::uint8_t { returned, none, dropped_in_host };
const char* to_string(FragNeeded f) noexcept;  // "returned", "none", "dropped-in-host"

// DF packets above a size died while smaller ones passed the flow's whole path.
struct PathMtu {
    std::int64_t lost_min_size = 0;
    std::int64_t passed_max_size = 0;
    FragNeeded frag_needed = FragNeeded::none;
    std::string after;
    // The ICMP error that came back (frag_needed returned or dropped-in-host): its MTU, reporter and first point.
    std::optional<std::int64_t> mtu;
    std::optional<std::string> reporter;
    std::optional<std::string> arrived_on;
};

struct Fragments {
    std::int64_t datagrams = 0;
    std::int64_t fragments = 0;  // the first ones included
};

struct Flow {
    std::int64_t id = 0;
    std::int64_t proto = 0;
    Tuple original;
    Tuple translated;
    std::vector<Rewrite> rewrites;
    std::int64_t packets = 0;  // sightings
    std::int64_t journeys = 0;
    std::int64_t forward_journeys = 0;  // the flow's own packets: no ICMP errors, segments, fragments or copies
    std::int64_t reply_journeys = 0;
    std::int64_t repeated_forward = 0;  // retransmissions, duplicated packets
    std::int64_t repeated_reply = 0;
    std::int64_t first_ts_ns = 0;
    std::int64_t last_ts_ns = 0;
    std::vector<std::string> path;
    std::vector<HopStats> hops;  // along the flow's own path: forward outward, replies inward
    std::vector<Loss> lost;      // its own packets' (not its ICMP errors')
    std::vector<Observer> observers;
    std::vector<Segmentation> segmentation;
    std::optional<Conntrack> conntrack;  // live captures (a conntrack table was dumped)
    std::vector<IcmpAnswer> icmp_errors;
    // The container's published ports (docker run -p) this flow's DNAT went through: "0.0.0.0:8080->80/tcp (web)".
    std::vector<std::string> published;
    std::optional<Relay> relay;  // Docker's userland proxy took this connection, or made it
    std::int64_t ambiguous = 0;
    std::int64_t copies = 0;
    std::optional<std::int64_t> copies_interfaces;
    std::optional<Fragments> fragments;
    std::optional<PathMtu> pmtu;
};

// Where an ICMP error died on its way back to the probe's sender.
struct ErrorLoss {
    std::string after;
    std::string expected;
    std::int64_t count = 0;
};

// The quoted packet of an ICMP error, as its last sighting showed it (after NAT undid its rewrite).
struct Probe {
    std::int64_t proto = 0;
    std::string src;
    std::string dst;
    std::int64_t sport = 0;
    std::int64_t dport = 0;
    std::int64_t ttl = 0;
    std::optional<std::int64_t> sent_ttl;  // the probe journey's first sighting's TTL
};

struct IcmpError {
    std::int64_t type = 0;
    std::int64_t code = 0;
    std::string reporter;
    std::int64_t icmp = 1;  // the error's own protocol: 1 or 58
    std::int64_t journey = 0;
    std::int64_t flow = 0;
    std::optional<std::int64_t> probe_journey;
    std::vector<std::string> path;
    Probe probe;
    std::vector<ErrorLoss> lost;
    std::int64_t mtu = 0;  // frag-needed / packet too big: the next-hop MTU; 0 none
};

struct QuotedTuple {
    std::int64_t proto = 0;
    Tuple tuple;
    std::string at;
    bool known = true;  // false: the sighting at `at` held no readable quote (only `at` is said)
};

struct TraceAnswer {
    std::int64_t journey = 0;
    std::string kind;  // "time exceeded", "port unreachable", "echo reply", "tcp syn-ack" …
    std::string reporter;
    bool destination = false;
    std::vector<std::string> path;
    std::optional<std::vector<QuotedTuple>> quoted;  // ICMP errors: as it arrived, as it left the last point
};

struct RoundTrip {
    std::string point;
    std::int64_t ns = 0;
};

struct TraceProbe {
    std::int64_t journey = 0;
    std::int64_t flow = 0;
    std::vector<std::string> path;
    std::optional<TraceAnswer> answer;
    std::vector<RoundTrip> rtt;  // answer − probe at each point both crossed (with an answer only)
};

struct TraceHop {
    std::int64_t ttl = 0;
    std::vector<std::string> reporters;
    std::int64_t answered = 0;
    bool reached_destination = false;
    std::vector<TraceProbe> probes;
};

struct LaterProbes {
    std::int64_t probes = 0;
    std::int64_t answered = 0;
    std::int64_t min_ttl = 0;
    std::int64_t max_ttl = 0;
};

struct Traceroute {
    std::int64_t proto = 0;
    std::string src;
    std::string dst;
    std::int64_t probes = 0;
    std::vector<TraceHop> hops;
    bool reached_destination = false;
    LaterProbes later_probes;
};

// ---------------------------------------------------------------------------------------------------------------
// What the HTML page draws beyond the summaries: bounded samples (docs/cli.md, "How the size is bounded").

struct HtmlOptions {
    std::size_t max_flows_drawn = 20;            // flows with a ladder diagram and hop box plots
    std::size_t max_journeys_per_ladder = 60;    // evenly sampled from the flow's journeys (in time order) …
    std::size_t max_notable_journeys = 8;        // … plus up to this many lost and ICMP error journeys
    std::size_t max_lanes = 12;                  // points (lanes) per ladder
    std::size_t histogram_bins = 40;             // per hop histogram, on a log-like time axis
    std::size_t max_histograms = 24;             // hops (direction, point pair) of all flows with a histogram
    std::size_t max_histogram_journeys = 20000;  // journeys sampled (evenly, by id) for the histograms
    std::size_t max_table_rows = 500;            // rows of the flow, NAT, ICMP error and point tables
    std::size_t max_diagram_points = 48;         // points drawn in the path diagram
    std::size_t max_text_chars = 160;            // any one string from the capture (names, command line …)
};

// One packet of a drawn journey, as its point saw it.
struct LadderSighting {
    std::int64_t point = 0;  // points.id
    std::int64_t ts_ns = 0;
    std::string src;
    std::string dst;
    std::int64_t sport = 0;
    std::int64_t dport = 0;
    std::int64_t ttl = 0;
    std::int64_t proto = 0;
    std::int64_t payload_len = 0;
    bool icmp_error = false;
    std::optional<std::int64_t> icmp_type;
    std::optional<std::int64_t> icmp_code;
    std::optional<std::int64_t> icmp_seq;
    std::optional<std::int64_t> tcp_flags;
};

struct LadderJourney {
    std::int64_t id = 0;
    bool reply = false;
    bool icmp_error = false;
    std::optional<std::size_t> error;       // its ReportModel::icmp_errors entry, among the first max_table_rows
    std::vector<LadderSighting> sightings;  // in hop order; never empty
};

struct Ladder {
    std::vector<LadderJourney> journeys;  // by first timestamp, then id
    std::size_t total = 0;                // the flow's journeys
};

struct HtmlSamples {
    HtmlOptions options;
    std::set<std::int64_t> drawn;     // flow ids drawn in full: troubled flows first, then the busiest
    std::vector<std::size_t> listed;  // indexes into flows, in the model's order: the flows the tables list
    std::map<std::int64_t, std::vector<std::size_t>> errors_of_flow;  // among the first max_table_rows errors
    std::map<std::int64_t, Ladder> ladders;                           // flow id -> its sampled journeys (drawn flows)
    // Hop times of every step-th journey, per hop_totals entry (the first max_histograms), of the model's flows.
    std::vector<std::vector<std::int64_t>> histogram;
    std::int64_t histogram_step = 1;
    std::int64_t histogram_sampled = 0;
    bool subset = false;  // the model holds fewer flows than the store (--flow)
};

// Facts about the capture that the page's header and footer name.
struct CaptureInfo {
    std::string database;  // the file's name as given ("" for an in-memory database)
    std::optional<std::string> version;
    std::string command_line;  // of the capture, else of the last import
    std::string host;
    bool masquerade = false;
};

struct ReportModel {
    std::vector<Point> points;  // in path order, then id
    std::vector<Flow> flows;
    std::vector<IcmpError> icmp_errors;
    std::vector<HopStats> hop_totals;  // all flows together (or the selected ones', recomputed)
    std::vector<Traceroute> traceroutes;
    std::int64_t ambiguous_journeys = 0;          // in the whole store
    std::optional<RuleTraceSummary> rule_traces;  // captured with --trace-rules
    std::optional<std::string> flow_filter;
    CaptureInfo capture;
    std::optional<HtmlSamples> html;
};

// What to load: the flows a --flow filter selects (all without one); with `html`, also the page's samples.
struct Selection {
    std::optional<FlowFilter> flows;
    std::optional<HtmlOptions> html;
};

// The store of a correlated capture as the report shows it. Store errors throw store::Error.
ReportModel load_report(const store::Database& db, const Selection& selection = {});

// The ids of the flows in `db` that `filter` selects; `total` (if given) is increased by the number of flows read.
std::unordered_set<std::int64_t> select_flows(const store::Database& db, const FlowFilter& filter,
                                              std::uint64_t* total = nullptr);
std::uint64_t count_flows(const store::Database& db);

// ---------------------------------------------------------------------------------------------------------------
// Cursors for the outputs that stream.

// Two consecutive sightings of a journey (one hop sample), in journey and hop order.
struct HopSample {
    std::int64_t flow = 0;
    std::int64_t proto = 0;
    FlowDirection direction = FlowDirection::forward;
    std::int64_t journey = 0;
    std::int64_t from_point = 0;  // points.id
    std::int64_t to_point = 0;
    std::int64_t from_ts_ns = 0;
    std::int64_t to_ts_ns = 0;
    bool icmp_error = false;  // the journey is an ICMP error
};
void for_each_hop_sample(const store::Database& db, const std::function<void(const HopSample&)>& visit);

// The hop statistics ("hop_totals") of the flows `keep` selects, from every hop sample of their journeys (ICMP
// errors apart, as in the stored totals), per direction and point pair.
std::vector<HopStats> hop_totals(const store::Database& db, const std::function<bool(std::int64_t flow)>& keep);

// The points as the report orders them (path order, then id).
std::vector<Point> load_points(const store::Database& db);

// One stored packet with what the export's comment needs. The views (`raw`) live until the next step.
struct StoredPacket {
    std::int64_t id = 0;
    std::int64_t ts_ns = 0;
    std::int64_t wire_len = 0;
    std::string direction;    // capture direction: "in", "out", ""
    std::uint32_t flags = 0;  // tracer packet_flag bits
    std::int64_t ethertype = 0;
    std::int64_t ip_version = 0;
    std::int64_t proto = 0;
    std::string src;
    std::string dst;
    std::int64_t sport = 0;
    std::int64_t dport = 0;
    std::int64_t fingerprint = 0;
    std::optional<std::int64_t> journey;
    std::optional<std::int64_t> hop;  // nullopt in a journey: an observer
    std::optional<std::int64_t> flow;
    std::string journey_direction;
    std::int64_t journey_hops = 0;  // the journey's sightings on its path
    // The journey's previous sighting (hop - 1), when stored.
    std::optional<std::int64_t> prev_point;
    std::int64_t prev_ts_ns = 0;
    std::string prev_src;
    std::string prev_dst;
    std::int64_t prev_sport = 0;
    std::int64_t prev_dport = 0;
    std::span<const std::uint8_t> raw;
};

// One point's packets in time order (ties: by id), along the packets_point_ts index: nothing is sorted, memory
// stays flat.
class PointPackets {
public:
    PointPackets(const store::Database& db, std::int64_t point_id);
    bool next();  // false at the end
    [[nodiscard]] const StoredPacket& packet() const { return m_packet; }

private:
    store::Statement m_query;
    StoredPacket m_packet;
};

// Per point: the largest captured length of its packets, and of those the snap length cut (nullopt: none was).
struct CapturedLengths {
    std::int64_t largest = 0;
    std::optional<std::int64_t> largest_snapped;
};
std::map<std::int64_t, CapturedLengths> captured_lengths(const store::Database& db);

}  // namespace hoptrace::report
