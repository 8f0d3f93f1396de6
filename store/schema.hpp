#pragma once
// The hoptrace database schema, version k_schema_version (PRAGMA user_version). docs/schema.md describes
// every table and column for people who query the file with the sqlite3 shell; keep the two in step.

namespace hoptrace::store {

inline constexpr int k_schema_version = 5;
// Readers (read-only) also take files of versions from this one on: version 5 only added what --trace-rules fills
// (rule_traces, journeys.loss_id), which the report reads only when meta trace_rules says the capture has them.
inline constexpr int k_oldest_readable_version = 4;

inline constexpr const char* k_schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  netns         TEXT NOT NULL DEFAULT '',
  ifname        TEXT NOT NULL DEFAULT '',
  role          TEXT NOT NULL DEFAULT 'other',   -- container | veth | bridge | uplink | other
  ifindex       INTEGER NOT NULL DEFAULT 0,
  link_type     INTEGER NOT NULL DEFAULT 0,      -- pcap LINKTYPE_*
  source        TEXT NOT NULL DEFAULT '',        -- file it was imported from, or 'live'
  packets       INTEGER NOT NULL DEFAULT 0,      -- sightings stored for this point
  kernel_drops  INTEGER NOT NULL DEFAULT 0,      -- pcap_stats ps_drop (live capture only)
  path_order    INTEGER,                         -- position on the path, set by correlate (0 = innermost)
  note          TEXT NOT NULL DEFAULT '',
  role_evidence TEXT NOT NULL DEFAULT '',        -- how the role was found: live topology, given, name, traffic (v3)
  addresses     TEXT NOT NULL DEFAULT '',        -- the interface's addresses, "172.17.0.1/16 fd00:17::1/64" (live, v3)
  file_born_ns  INTEGER,                         -- imported file: created (statx btime), when the capture began at the latest (v3)
  file_written_ns INTEGER,                       -- imported file: last written (mtime), when the capture ended at the earliest (v3)
  complete      INTEGER NOT NULL DEFAULT 1       -- 0 while an import reads the point's file: a killed import leaves 0 (v4)
);
CREATE TABLE IF NOT EXISTS packets (
  id             INTEGER PRIMARY KEY,
  point_id       INTEGER NOT NULL REFERENCES points(id),
  ts_ns          INTEGER NOT NULL,
  cap_len        INTEGER NOT NULL,
  wire_len       INTEGER NOT NULL,
  direction      TEXT NOT NULL,                  -- in | out | '' (capture direction, when known)
  flags          INTEGER NOT NULL,               -- packet_flag bits (docs/schema.md)
  ethertype      INTEGER NOT NULL,
  vlan           INTEGER NOT NULL,
  ip_version     INTEGER NOT NULL,
  proto          INTEGER NOT NULL,
  src            TEXT NOT NULL,
  dst            TEXT NOT NULL,
  sport          INTEGER NOT NULL,
  dport          INTEGER NOT NULL,
  ip_id          INTEGER NOT NULL,
  ttl            INTEGER NOT NULL,
  ip_len         INTEGER NOT NULL,
  icmp_type      INTEGER,
  icmp_code      INTEGER,
  icmp_id        INTEGER,
  icmp_seq       INTEGER,
  tcp_seq        INTEGER,
  tcp_ack        INTEGER,
  tcp_flags      INTEGER,
  payload_len    INTEGER NOT NULL,
  inner_proto    INTEGER,                        -- ICMP errors: the quoted packet
  inner_src      TEXT,
  inner_dst      TEXT,
  inner_sport    INTEGER,
  inner_dport    INTEGER,
  inner_ttl      INTEGER,
  inner_ip_id    INTEGER,                        -- the quoted IPv4 packet's identification (v2)
  inner_seq      INTEGER,                        -- the quoted ICMP echo sequence or TCP sequence (v2)
  fingerprint    INTEGER NOT NULL,               -- 64-bit, stored as a signed integer
  journey_id     INTEGER,                        -- set by correlate
  hop            INTEGER,                        -- 0-based position of this sighting in its journey
  frag_offset    INTEGER NOT NULL DEFAULT 0,     -- IP fragment offset in bytes (v3)
  icmp_mtu       INTEGER,                        -- next-hop MTU of frag-needed / packet-too-big (v3)
  raw            BLOB NOT NULL                   -- the frame, up to the snap length
);
CREATE TABLE IF NOT EXISTS flows (
  id            INTEGER PRIMARY KEY,
  proto         INTEGER NOT NULL,
  orig_src      TEXT NOT NULL,
  orig_dst      TEXT NOT NULL,
  orig_sport    INTEGER NOT NULL,
  orig_dport    INTEGER NOT NULL,
  trans_src     TEXT NOT NULL,
  trans_dst     TEXT NOT NULL,
  trans_sport   INTEGER NOT NULL,
  trans_dport   INTEGER NOT NULL,
  packets       INTEGER NOT NULL,
  journeys      INTEGER NOT NULL,
  first_ts_ns   INTEGER NOT NULL,
  last_ts_ns    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journeys (
  id            INTEGER PRIMARY KEY,
  flow_id       INTEGER NOT NULL REFERENCES flows(id),
  direction     TEXT NOT NULL,                  -- forward | reply
  fingerprint   INTEGER NOT NULL,
  sightings     INTEGER NOT NULL,
  first_point   INTEGER NOT NULL REFERENCES points(id),
  last_point    INTEGER NOT NULL REFERENCES points(id),
  first_ts_ns   INTEGER NOT NULL,
  last_ts_ns    INTEGER NOT NULL,
  related_id    INTEGER REFERENCES journeys(id), -- the journey this one answers / repeats / is a segment of (v2)
  relation      TEXT,                           -- answers | repeats | segment-of | fragment-of | reassembly-of | copy-of
  ambiguous     INTEGER NOT NULL DEFAULT 0,     -- 1: a sighting could have continued another journey too (v3)
  loss_id       INTEGER REFERENCES losses(id)   -- the loss this journey is one of (a datagram's: its first fragment) (v5)
);
CREATE TABLE IF NOT EXISTS nat_rewrites (
  id            INTEGER PRIMARY KEY,
  flow_id       INTEGER NOT NULL REFERENCES flows(id),
  direction     TEXT NOT NULL,                  -- forward | reply
  field         TEXT NOT NULL,                  -- src | dst | sport | dport | id
  from_value    TEXT NOT NULL,
  to_value      TEXT NOT NULL,
  from_point    INTEGER NOT NULL REFERENCES points(id),
  to_point      INTEGER NOT NULL REFERENCES points(id),
  packets       INTEGER NOT NULL                -- journeys that showed this rewrite
);
CREATE TABLE IF NOT EXISTS hops (
  id            INTEGER PRIMARY KEY,
  flow_id       INTEGER REFERENCES flows(id),   -- NULL: all flows together
  direction     TEXT NOT NULL,
  from_point    INTEGER NOT NULL REFERENCES points(id),
  to_point      INTEGER NOT NULL REFERENCES points(id),
  count         INTEGER NOT NULL,
  min_ns        INTEGER NOT NULL,
  p50_ns        INTEGER NOT NULL,
  p90_ns        INTEGER NOT NULL,
  p99_ns        INTEGER NOT NULL,
  max_ns        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS losses (
  id             INTEGER PRIMARY KEY,
  flow_id        INTEGER NOT NULL REFERENCES flows(id),
  direction      TEXT NOT NULL,
  after_point    INTEGER NOT NULL REFERENCES points(id),
  expected_point INTEGER NOT NULL REFERENCES points(id),
  count          INTEGER NOT NULL,
  cause          TEXT NOT NULL DEFAULT 'dropped', -- dropped | expired | rejected (v2)
  error_journey  INTEGER REFERENCES journeys(id), -- set: this loss is of that ICMP error, on its way back (v3)
  evidence_id    INTEGER REFERENCES journeys(id), -- an ICMP error journey that explains it (rejected, expired) (v3)
  outside_window INTEGER NOT NULL DEFAULT 0       -- of count: lost while only the other files show capturing (v3)
);
CREATE TABLE IF NOT EXISTS rule_traces (            -- v5: netfilter trace events (capture --trace-rules)
  id            INTEGER PRIMARY KEY,
  ts_ns         INTEGER NOT NULL,               -- when hoptrace received it (the kernel does not stamp them)
  trace_id      INTEGER NOT NULL,               -- the kernel's id of one packet's walk through the hooks
  walk          INTEGER NOT NULL,               -- hoptrace's number for that walk (trace ids are reused)
  netns         TEXT NOT NULL,                  -- the namespace traced
  family        TEXT NOT NULL,                  -- ip | ip6 | inet | bridge | arp | netdev
  tbl           TEXT NOT NULL,
  chain         TEXT NOT NULL,
  type          TEXT NOT NULL,                  -- packet (its headers, entering a chain) | rule | return | policy
  handle        INTEGER,                        -- the rule's handle (type rule)
  rule          TEXT NOT NULL DEFAULT '',       -- the rule: as iptables-save prints it, or 'nft: ' and its expressions
  verdict       TEXT NOT NULL DEFAULT '',       -- accept | drop | continue | jump | goto | return | queue | ...
  target        TEXT NOT NULL DEFAULT '',       -- jump, goto: the chain
  iif           INTEGER NOT NULL DEFAULT 0,     -- interface indexes in that namespace (0: none)
  oif           INTEGER NOT NULL DEFAULT 0,
  ip_version    INTEGER NOT NULL DEFAULT 0,     -- the packet as that hook saw it
  proto         INTEGER NOT NULL DEFAULT 0,
  src           TEXT NOT NULL DEFAULT '',
  dst           TEXT NOT NULL DEFAULT '',
  sport         INTEGER NOT NULL DEFAULT 0,
  dport         INTEGER NOT NULL DEFAULT 0,
  ip_id         INTEGER NOT NULL DEFAULT 0,
  ip_len        INTEGER NOT NULL DEFAULT 0,
  journey_id    INTEGER REFERENCES journeys(id) -- set by correlate: the journey of the packet it traced
);
CREATE INDEX IF NOT EXISTS rule_traces_walk ON rule_traces(walk);
CREATE TABLE IF NOT EXISTS containers (             -- v5: what the engine said about a --container target's point
  point_id      INTEGER PRIMARY KEY REFERENCES points(id),
  name          TEXT NOT NULL,                  -- without the leading '/'
  id            TEXT NOT NULL,                  -- the full ID
  image         TEXT NOT NULL,
  networks      TEXT NOT NULL,                  -- space-separated
  ports         TEXT NOT NULL                   -- published, space-separated: 0.0.0.0:8080->80/tcp
);
CREATE TABLE IF NOT EXISTS proxies (                -- v5: Docker's userland proxies in the host namespace
  pid           INTEGER NOT NULL,               -- a docker-proxy process, at the capture's start
  proto         TEXT NOT NULL,                  -- tcp | udp | sctp
  host_ip       TEXT NOT NULL,                  -- 0.0.0.0 (or ::): every address of the host
  host_port     INTEGER NOT NULL,
  container_ip  TEXT NOT NULL,
  container_port INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_counters (          -- v5: nf_tables rules whose counters moved during a live capture
  id            INTEGER PRIMARY KEY,
  netns         TEXT NOT NULL,                  -- the host namespace
  family        TEXT NOT NULL,                  -- ip | ip6 | inet | …
  tbl           TEXT NOT NULL,
  chain         TEXT NOT NULL,
  handle        INTEGER NOT NULL,
  rule          TEXT NOT NULL,                  -- as iptables-save prints it, or 'nft: ' and its expressions
  packets       INTEGER NOT NULL                -- how much its counter moved (every packet it matched, not only ours)
);
CREATE TABLE IF NOT EXISTS conntrack (
  id            INTEGER PRIMARY KEY,
  ts_ns         INTEGER NOT NULL,
  event         TEXT NOT NULL,                  -- dump-start | dump-end | new | update | destroy
  proto         INTEGER NOT NULL,
  orig_src      TEXT NOT NULL,
  orig_dst      TEXT NOT NULL,
  orig_sport    INTEGER NOT NULL,
  orig_dport    INTEGER NOT NULL,
  reply_src     TEXT NOT NULL,
  reply_dst     TEXT NOT NULL,
  reply_sport   INTEGER NOT NULL,
  reply_dport   INTEGER NOT NULL
);
)sql";

// The one index that grows while packets stream in (the Writer creates it): rows arrive in time order per
// point, so each entry lands at the right edge of its range, which is cheaper than building it afterwards.
inline constexpr const char* k_load_index_sql = R"sql(
CREATE INDEX IF NOT EXISTS packets_point_ts ON packets(point_id, ts_ns);
)sql";

// All indexes (Database::build_indexes). The journey indexes are built after correlate has written the
// journeys: their keys are all NULL during a load, and building them once beats a million random updates.
inline constexpr const char* k_index_sql = R"sql(
CREATE INDEX IF NOT EXISTS packets_point_ts ON packets(point_id, ts_ns);
CREATE INDEX IF NOT EXISTS packets_journey ON packets(journey_id, hop);
CREATE INDEX IF NOT EXISTS journeys_flow ON journeys(flow_id);
)sql";

}  // namespace hoptrace::store
