// The capture spool: the chunk record format, and ingest_spool() turning chunks into the same `packets` rows an
// import of the same frames makes, exactly once even when the process dies in the middle. Real frames from the
// captures in tests/data, the real SQLite, no mocks.

#include "store/spool.hpp"
#include "store/chunk.hpp"
#include "store/database.hpp"
#include "store/import.hpp"
#include "store/writer.hpp"
#include "tracer/capture_file.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hoptrace::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "hoptrace-spool-XXXXXX").string();
        if (mkdtemp(pattern.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        m_path = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(m_path, ignored);
    }
    [[nodiscard]] std::string file(const std::string& name) const { return (m_path / name).string(); }

private:
    fs::path m_path;
};

std::string data(const std::string& relative) { return std::string(HOPTRACE_TEST_DATA) + "/" + relative; }

// Every capture in tests/data that hoptrace reads (the damaged ones up to their damage): Ethernet, VLAN tags,
// Linux cooked v1 and v2 (one point per interface index), raw IP, pcapng with several interfaces and sections,
// in/out directions, micro- and nanosecond times, snapped frames, ICMP errors, IPv6, fragments.
const std::vector<std::string> k_captures = {
    "tracer/eth_ipv4.pcap",    "tracer/eth_ipv4_nano.pcap", "tracer/eth_ipv4_nano.pcapng",
    "tracer/eth_ipv6.pcap",    "tracer/vlan.pcap",          "tracer/any_sll.pcap",
    "tracer/any_sll2.pcap",    "tracer/icmp_errors.pcap",   "tracer/nat_inside.pcap",
    "tracer/nat_outside.pcap", "tracer/merged.pcapng",      "tracer/router.pcapng",
    "tracer/snapped.pcap",     "tracer/synthetic.pcapng",   "tracer/synthetic_spb.pcapng",
    "tracer/truncated.pcap",   "tracer/truncated.pcapng",   "lab/c1-eth0.pcap",
    "lab/c1-veth.pcap",        "lab/c2-eth0.pcap",          "lab/c2-veth.pcap",
    "lab/docker0.pcap",        "lab/uplink.pcap",           "lab/host-any.pcap",
};

struct OwnedFrame {
    std::int64_t ts_ns = 0;
    std::uint32_t wire_len = 0;
    LinkType link_type = LinkType::ethernet;
    Direction direction = Direction::unknown;
    std::vector<std::uint8_t> bytes;
    std::uint32_t point_id = 0;

    [[nodiscard]] Frame frame() const { return Frame{ts_ns, wire_len, link_type, direction, bytes}; }
};

// Every frame of the file until its end or its first error, as import_file reads them.
std::vector<OwnedFrame> read_frames(const std::string& path) {
    auto file = CaptureFile::open(path);
    EXPECT_TRUE(file.has_value()) << path;
    std::vector<OwnedFrame> out;
    if (!file) {
        return out;
    }
    FileFrame ff;
    for (;;) {
        const auto more = (*file)->next(ff);
        if (!more || !*more) {
            break;
        }
        const Frame& f = ff.frame;
        out.push_back({f.ts_ns, f.wire_len, f.link_type, f.direction, {f.bytes.begin(), f.bytes.end()}, 0});
    }
    return out;
}

std::int64_t scalar(const Database& db, const std::string& sql) {
    Statement stmt = db.prepare(sql);
    EXPECT_TRUE(stmt.step()) << sql;
    return stmt.column_int(0);
}

std::vector<std::string> column_names(const Database& db, const std::string& table) {
    Statement stmt = db.prepare("SELECT name FROM pragma_table_info('" + table + "') ORDER BY cid");
    std::vector<std::string> names;
    while (stmt.step()) {
        names.push_back(stmt.column_text(0));
    }
    return names;
}

// Every row of `packets` but its id, each column as SQL's quote() writes it (so the type shows: 5, '5', X'05',
// NULL), per point in the order the rows were inserted.
std::vector<std::vector<std::string>> packet_rows(const Database& db) {
    std::string select;
    for (const std::string& name : column_names(db, "packets")) {
        if (name != "id") {
            select += (select.empty() ? "" : ", ") + ("quote(" + name + ")");
        }
    }
    Statement stmt = db.prepare("SELECT " + select + " FROM packets ORDER BY point_id, id");
    const int columns = sqlite3_column_count(stmt.handle());
    std::vector<std::vector<std::string>> rows;
    while (stmt.step()) {
        std::vector<std::string>& row = rows.emplace_back();
        for (int i = 0; i < columns; ++i) {
            row.push_back(stmt.column_text(i));
        }
    }
    return rows;
}

std::vector<std::vector<std::string>> point_rows(const Database& db) {
    Statement stmt = db.prepare("SELECT id, name, link_type, packets FROM points ORDER BY id");
    std::vector<std::vector<std::string>> rows;
    while (stmt.step()) {
        rows.push_back({stmt.column_text(0), stmt.column_text(1), stmt.column_text(2), stmt.column_text(3)});
    }
    return rows;
}

// The reference: every capture imported the way `hoptrace import` does (dissect -> Writer::add). Returns the
// frames in the order they were read, each with the point import gave it (rows are inserted in that order).
std::vector<OwnedFrame> import_reference(Database& db) {
    {
        Writer writer(db);
        for (std::size_t i = 0; i < k_captures.size(); ++i) {
            import_file(db, writer, {"p" + std::to_string(i), data(k_captures[i]), {}});
        }
        writer.close();
    }
    std::vector<OwnedFrame> frames;
    for (const std::string& capture : k_captures) {
        auto more = read_frames(data(capture));
        frames.insert(frames.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    }
    Statement stmt = db.prepare("SELECT point_id FROM packets ORDER BY id");
    std::size_t i = 0;
    while (stmt.step()) {
        EXPECT_LT(i, frames.size());
        if (i < frames.size()) {
            frames[i].point_id = static_cast<std::uint32_t>(stmt.column_int(0));
        }
        ++i;
    }
    EXPECT_EQ(i, frames.size()) << "import stored a different number of frames than the files hold";
    return frames;
}

// The same points (ids, names, link types) in another database, with no packets yet.
std::vector<std::uint32_t> copy_points(const Database& from, Database& to) {
    std::vector<std::uint32_t> ids;
    for (Point p : from.points()) {
        const std::int64_t id = p.id;
        p.packets = 0;
        EXPECT_EQ(to.add_point(p), id);
        ids.push_back(static_cast<std::uint32_t>(id));
    }
    return ids;
}

// What a live capture does: each frame appended to its point's buffer, chunks handed to the Writer as they fill.
void spool_frames(Database& db, const std::vector<std::uint32_t>& point_ids, const std::vector<OwnedFrame>& frames,
                  SpoolLimits limits) {
    Writer writer(db);
    Spool spool(writer, point_ids, limits);
    for (const OwnedFrame& f : frames) {
        spool.append(f.point_id, f.frame());
    }
    for (const std::uint32_t id : point_ids) {
        spool.flush(id);
    }
    writer.close();
}

SpoolIngest ingest(Database& db) {
    Writer writer(db);
    const SpoolIngest result = ingest_spool(db, writer);
    writer.close();
    return result;
}

// ---------------------------------------------------------------------------------------------------------------
// The record format

TEST(ChunkFormat, a_record_is_a_17_byte_little_endian_header_then_the_bytes) {
    ChunkBuilder builder(7);
    const std::vector<std::uint8_t> bytes{0xaa, 0xbb, 0xcc};
    builder.append(Frame{0x0102030405060708, 0x11223344, LinkType::linux_sll2, Direction::outbound, bytes});
    const SpoolChunk chunk = builder.take();
    const std::vector<std::uint8_t> expected{0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // ts_ns
                                             0x03, 0x00, 0x00, 0x00,                          // cap_len
                                             0x44, 0x33, 0x22, 0x11,                          // wire_len
                                             0x02,                                            // direction: out
                                             0xaa, 0xbb, 0xcc};
    EXPECT_EQ(chunk.data, expected);
    EXPECT_EQ(chunk.point_id, 7U);
    EXPECT_EQ(chunk.link_type, LinkType::linux_sll2);
    EXPECT_EQ(chunk.frames, 1U);
    EXPECT_EQ(chunk.first_ts_ns, 0x0102030405060708);
    EXPECT_EQ(chunk.last_ts_ns, 0x0102030405060708);
    EXPECT_TRUE(builder.empty());
    EXPECT_EQ(builder.take().point_id, 7U);  // the next chunk is the same point's
}

TEST(ChunkFormat, real_frames_round_trip_with_times_lengths_directions_and_bytes) {
    std::size_t total = 0;
    std::size_t with_direction = 0;
    for (const std::string& capture : k_captures) {
        const auto frames = read_frames(data(capture));
        // Per link type, as a chunk has one; the frames in file order.
        std::map<LinkType, std::vector<const OwnedFrame*>> by_link;
        for (const OwnedFrame& f : frames) {
            by_link[f.link_type].push_back(&f);
        }
        for (const auto& [link, list] : by_link) {
            ChunkBuilder builder(1);
            for (const OwnedFrame* f : list) {
                builder.append(f->frame());
            }
            const SpoolChunk chunk = builder.take();
            ASSERT_EQ(chunk.frames, list.size()) << capture;
            EXPECT_EQ(chunk.link_type, link) << capture;
            std::int64_t first = list.front()->ts_ns;
            std::int64_t last = first;
            std::size_t size = 0;
            for (const OwnedFrame* f : list) {
                first = std::min(first, f->ts_ns);
                last = std::max(last, f->ts_ns);
                size += k_chunk_record_header + f->bytes.size();
            }
            EXPECT_EQ(chunk.first_ts_ns, first) << capture;
            EXPECT_EQ(chunk.last_ts_ns, last) << capture;
            EXPECT_EQ(chunk.data.size(), size) << capture;

            ChunkReader reader(chunk.data, chunk.link_type);
            Frame frame;
            for (std::size_t i = 0; i < list.size(); ++i) {
                const auto more = reader.next(frame);
                ASSERT_TRUE(more.has_value()) << capture << " frame " << i << ": " << more.error();
                ASSERT_TRUE(*more) << capture << " ended after " << i << " frames";
                const OwnedFrame& want = *list[i];
                EXPECT_EQ(frame.ts_ns, want.ts_ns) << capture << " frame " << i;
                EXPECT_EQ(frame.wire_len, want.wire_len) << capture << " frame " << i;
                EXPECT_EQ(frame.link_type, want.link_type) << capture << " frame " << i;
                EXPECT_EQ(frame.direction, want.direction) << capture << " frame " << i;
                EXPECT_TRUE(std::equal(frame.bytes.begin(), frame.bytes.end(), want.bytes.begin(), want.bytes.end()))
                    << capture << " frame " << i;
                with_direction += want.direction != Direction::unknown ? 1 : 0;
            }
            const auto end = reader.next(frame);
            ASSERT_TRUE(end.has_value()) << end.error();
            EXPECT_FALSE(*end) << capture;
            EXPECT_EQ(reader.frames_read(), list.size());
            total += list.size();
        }
    }
    EXPECT_GT(total, 300U);
    EXPECT_GT(with_direction, 0U) << "no capture with in/out directions was read";
}

TEST(ChunkFormat, an_empty_frame_is_a_header_alone) {
    ChunkBuilder builder(1);
    builder.append(Frame{5, 60, LinkType::ethernet, Direction::inbound, {}});
    builder.append(Frame{4, 0, LinkType::ethernet, Direction::unknown, {}});
    const SpoolChunk chunk = builder.take();
    EXPECT_EQ(chunk.data.size(), 2 * k_chunk_record_header);
    EXPECT_EQ(chunk.first_ts_ns, 4);
    EXPECT_EQ(chunk.last_ts_ns, 5);
    ChunkReader reader(chunk.data, chunk.link_type);
    Frame frame;
    ASSERT_TRUE(reader.next(frame).value());
    EXPECT_EQ(frame.ts_ns, 5);
    EXPECT_EQ(frame.wire_len, 60U);
    EXPECT_TRUE(frame.bytes.empty());
    ASSERT_TRUE(reader.next(frame).value());
    EXPECT_EQ(frame.ts_ns, 4);
    EXPECT_FALSE(reader.next(frame).value());
}

TEST(ChunkFormat, damaged_data_is_an_error_naming_the_record_never_a_read_past_the_end) {
    ChunkBuilder builder(1);
    const std::vector<std::uint8_t> bytes(40, 0x5a);
    builder.append(Frame{1, 40, LinkType::ethernet, Direction::unknown, bytes});
    builder.append(Frame{2, 40, LinkType::ethernet, Direction::unknown, bytes});
    const SpoolChunk chunk = builder.take();
    const std::size_t second = k_chunk_record_header + bytes.size();

    // Cut anywhere inside the second record: its header, or its bytes.
    for (const std::size_t cut : {second + 1, second + 16, second + k_chunk_record_header + 39}) {
        const std::span<const std::uint8_t> cut_data(chunk.data.data(), cut);
        ChunkReader reader(cut_data, chunk.link_type);
        Frame frame;
        ASSERT_TRUE(reader.next(frame).value());
        const auto more = reader.next(frame);
        ASSERT_FALSE(more.has_value()) << "cut at " << cut;
        EXPECT_NE(more.error().find("record 2 at byte " + std::to_string(second)), std::string::npos) << more.error();
    }
    // A direction that is not 0, 1 or 2.
    std::vector<std::uint8_t> bad = chunk.data;
    bad[16] = 9;
    ChunkReader reader(bad, chunk.link_type);
    Frame frame;
    const auto more = reader.next(frame);
    ASSERT_FALSE(more.has_value());
    EXPECT_NE(more.error().find("direction 9"), std::string::npos) << more.error();
}

// ---------------------------------------------------------------------------------------------------------------
// Ingest: the same rows as an import

TEST(SpoolIngest, chunks_become_the_rows_an_import_of_the_same_frames_makes_column_by_column) {
    Database reference = Database::open_memory();
    const std::vector<OwnedFrame> frames = import_reference(reference);
    ASSERT_GT(frames.size(), 300U);

    // Small chunks, so that every point's frames span several, cut at every kind of place.
    for (const SpoolLimits limits :
         {SpoolLimits{600, 1000, 1000ms}, SpoolLimits{1U << 20, 7, 1000ms}, SpoolLimits{1U << 20, 16384, 1000ms}}) {
        Database spooled = Database::open_memory();
        const auto ids = copy_points(reference, spooled);
        spool_frames(spooled, ids, frames, limits);
        EXPECT_EQ(scalar(spooled, "SELECT count(*) FROM packets"), 0) << "nothing is dissected while spooling";
        EXPECT_EQ(scalar(spooled, "SELECT sum(frames) FROM capture_chunks"), static_cast<std::int64_t>(frames.size()));
        EXPECT_EQ(scalar(spooled, "SELECT sum(packets) FROM points"), 0);
        const auto chunks = scalar(spooled, "SELECT count(*) FROM capture_chunks");
        EXPECT_GE(chunks, static_cast<std::int64_t>(ids.size()));
        const SpoolSize size = spool_size(spooled);
        EXPECT_EQ(size.chunks, static_cast<std::uint64_t>(chunks));
        EXPECT_EQ(size.frames, frames.size());

        const SpoolIngest result = ingest(spooled);
        EXPECT_EQ(result.chunks, static_cast<std::uint64_t>(chunks));
        EXPECT_EQ(result.frames, frames.size());
        EXPECT_FALSE(result.stopped);
        EXPECT_EQ(scalar(spooled, "SELECT count(*) FROM capture_chunks"), 0);

        const auto want = packet_rows(reference);
        const auto got = packet_rows(spooled);
        ASSERT_EQ(got.size(), want.size());
        const auto names = column_names(reference, "packets");
        for (std::size_t row = 0; row < want.size(); ++row) {
            ASSERT_EQ(got[row].size(), names.size() - 1);
            for (std::size_t column = 0; column < want[row].size(); ++column) {
                ASSERT_EQ(got[row][column], want[row][column])
                    << "row " << row << " column " << names[column + 1] << " (chunk limits " << limits.chunk_bytes
                    << " bytes, " << limits.chunk_frames << " frames)";
            }
        }
        EXPECT_EQ(point_rows(spooled), point_rows(reference));  // points.packets counted in the same transactions
    }
}

TEST(SpoolIngest, progress_may_stop_after_a_chunk_and_a_second_ingest_stores_the_rest) {
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    Database db = Database::open_memory();
    spool_frames(db, copy_points(reference, db), frames, SpoolLimits{4096, 1000, 1000ms});
    const auto chunks = static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM capture_chunks"));
    ASSERT_GT(chunks, 10U);

    SpoolIngest first;
    {
        Writer writer(db);
        std::uint64_t calls = 0;
        first = ingest_spool(db, writer, [&](std::uint64_t) { return ++calls < 3; });
        writer.close();
    }
    EXPECT_TRUE(first.stopped);
    EXPECT_EQ(first.chunks, 3U);
    EXPECT_EQ(spool_size(db).chunks, chunks - 3);
    EXPECT_EQ(static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM packets")), first.frames);

    const SpoolIngest rest = ingest(db);
    EXPECT_EQ(first.frames + rest.frames, frames.size());
    EXPECT_EQ(packet_rows(db), packet_rows(reference));
}

// ---------------------------------------------------------------------------------------------------------------
// Exactly once

TEST(SpoolIngest, a_failed_transaction_keeps_the_chunk_and_adds_none_of_its_rows) {
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    Database db = Database::open_memory();
    const auto ids = copy_points(reference, db);
    spool_frames(db, ids, frames, SpoolLimits{1U << 20, 16384, 1000ms});  // one chunk per point
    // The chunk of the third point refers to a point that is not there (foreign keys are off): the writer's
    // transaction for its rows fails after inserting them.
    db.exec("DELETE FROM points WHERE id = 3");
    const auto before = scalar(db, "SELECT count(*) FROM capture_chunks");
    const auto frames_of_3 = scalar(db, "SELECT sum(frames) FROM capture_chunks WHERE point_id = 3");
    ASSERT_GT(frames_of_3, 0);
    {
        Writer writer(db);
        EXPECT_THROW(
            {
                ingest_spool(db, writer);
                writer.close();
            },
            Error);
    }
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets WHERE point_id = 3"), 0);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM capture_chunks WHERE point_id = 3"), 1);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM capture_chunks WHERE point_id < 3"), 0) << "the chunks before it";
    // Every frame is in exactly one place.
    EXPECT_EQ(scalar(db, "SELECT (SELECT count(*) FROM packets) + (SELECT sum(frames) FROM capture_chunks)"),
              static_cast<std::int64_t>(frames.size()));
    EXPECT_LE(scalar(db, "SELECT count(*) FROM capture_chunks"), before);
}

TEST(SpoolIngest, rows_of_a_chunk_that_is_gone_are_not_added) {
    Database db = Database::open_memory();
    Point point;
    point.name = "p";
    const auto id = static_cast<std::uint32_t>(db.add_point(point));
    Writer writer(db);
    Writer::PacketRows rows;
    PacketRecord record;
    record.point_id = id;
    record.ts_ns = 1;
    const std::vector<std::uint8_t> raw{1, 2, 3};
    rows.add(record, raw);
    writer.add_rows(std::move(rows), 42);  // no chunk 42: another process stored it
    try {
        writer.close();
        ADD_FAILURE() << "close() did not report the missing chunk";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("spooled chunk 42 is gone"), std::string::npos) << e.what();
    }
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 0);
    EXPECT_EQ(scalar(db, "SELECT packets FROM points"), 0);
}

TEST(SpoolIngest, a_damaged_chunk_is_an_error_naming_it_and_stays_spooled) {
    Database db = Database::open_memory();
    Point point;
    point.name = "p";
    const auto id = static_cast<std::uint32_t>(db.add_point(point));
    const std::vector<std::uint8_t> bytes(60, 1);
    {
        Writer writer(db);
        for (int chunk = 0; chunk < 2; ++chunk) {
            ChunkBuilder builder(id);
            builder.append(Frame{chunk, 60, LinkType::ethernet, Direction::unknown, bytes});
            writer.add_chunk(builder.take());
        }
        writer.close();
    }
    db.exec("UPDATE capture_chunks SET data = substr(data, 1, 30) WHERE id = 2");
    Writer writer(db);
    try {
        ingest_spool(db, writer);
        ADD_FAILURE() << "no error for the damaged chunk";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("spooled chunk 2 (point id 1) is damaged: record 1 at byte 0"), std::string::npos) << what;
        EXPECT_NE(what.find("DELETE FROM capture_chunks WHERE id = 2"), std::string::npos) << what;
    }
    writer.close();  // the chunk before it is stored
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 1);
    EXPECT_EQ(scalar(db, "SELECT group_concat(id) FROM capture_chunks"), 2);
}

// The process dies (SIGKILL) at some moment of an ingest: between chunks, while the writer thread inserts, or while
// it commits. Afterwards every frame is in exactly one place, a packets row or a chunk, and a second ingest stores
// the rest: the same rows as the reference import, none twice.
TEST(SpoolIngest, a_process_killed_during_the_ingest_loses_no_frame_and_duplicates_no_row) {
    const TempDir dir;
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    const auto want = packet_rows(reference);
    const std::string original = dir.file("spooled.db");
    {
        Database db = Database::open(original);
        spool_frames(db, copy_points(reference, db), frames, SpoolLimits{2048, 1000, 1000ms});
    }
    std::int64_t chunks = 0;
    {
        const Database db = Database::open(original);
        chunks = scalar(db, "SELECT count(*) FROM capture_chunks");
    }
    ASSERT_GT(chunks, 50);
    std::fprintf(stderr, "%lld chunks\n", static_cast<long long>(chunks));

    int killed_mid_way = 0;
    for (int round = 0; round < 12; ++round) {
        const std::string path = dir.file("crash" + std::to_string(round) + ".db");
        fs::copy_file(original, path);
        // Kill after handing over `after` chunks (the writer thread is then at some point of its work on the last
        // ones), or from a timer while it runs.
        const int after = 1 + static_cast<int>(round * chunks / 14);
        const auto delay = std::chrono::microseconds(round * 2500);
        const pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            Database db = Database::open(path);
            Writer writer(db);
            std::thread killer;
            if (round % 2 == 1) {
                killer = std::thread([delay] {
                    std::this_thread::sleep_for(delay);
                    raise(SIGKILL);
                });
            }
            int handed = 0;
            ingest_spool(db, writer, [&](std::uint64_t) {
                if (round % 2 == 0 && ++handed == after) {
                    raise(SIGKILL);
                }
                return true;
            });
            writer.close();
            if (killer.joinable()) {
                killer.join();
            }
            _exit(0);
        }
        int status = 0;
        ASSERT_EQ(waitpid(child, &status, 0), child);
        Database db = Database::open(path);
        const auto rows = scalar(db, "SELECT count(*) FROM packets");
        const auto spooled = scalar(db, "SELECT coalesce(sum(frames), 0) FROM capture_chunks");
        EXPECT_EQ(rows + spooled, static_cast<std::int64_t>(frames.size()))
            << "round " << round << ": " << rows << " rows + " << spooled << " spooled frames";
        EXPECT_EQ(scalar(db, "SELECT sum(packets) FROM points"), rows) << "round " << round;
        if (WIFSIGNALED(status) && rows > 0 && spooled > 0) {
            ++killed_mid_way;
        }
        std::fprintf(stderr, "round %d: %s, %lld rows + %lld spooled\n", round,
                     WIFSIGNALED(status) ? "killed" : "finished", static_cast<long long>(rows),
                     static_cast<long long>(spooled));
        ingest(db);
        EXPECT_EQ(scalar(db, "SELECT count(*) FROM capture_chunks"), 0);
        EXPECT_EQ(packet_rows(db), want) << "round " << round;
    }
    EXPECT_GE(killed_mid_way, 2) << "the kills should land in the middle of the ingest";
}

// ---------------------------------------------------------------------------------------------------------------
// The capture side

TEST(Spool, a_quiet_points_chunk_is_handed_over_once_it_is_old_and_every_chunk_on_flush) {
    Database db = Database::open_memory();
    std::vector<std::uint32_t> ids;
    for (const char* name : {"a", "b"}) {
        Point p;
        p.name = name;
        ids.push_back(static_cast<std::uint32_t>(db.add_point(p)));
    }
    const std::vector<std::uint8_t> bytes(60, 7);
    Writer writer(db);
    {
        // Young: an hour is far away whatever the machine's load.
        Spool spool(writer, ids, SpoolLimits{1U << 20, 16384, std::chrono::hours(1)});
        spool.append(ids[0], Frame{1, 60, LinkType::ethernet, Direction::unknown, bytes});
        spool.tick(ids[0]);
        writer.flush();
        EXPECT_EQ(spool_size(db).chunks, 0U) << "younger than the limit: kept";
        spool.flush(ids[0]);
        spool.flush(ids[1]);  // nothing there: no empty chunk
        writer.flush();
        EXPECT_EQ(spool_size(db).chunks, 1U);
    }
    {
        Spool spool(writer, ids, SpoolLimits{1U << 20, 16384, 1ms});
        spool.append(ids[0], Frame{2, 60, LinkType::ethernet, Direction::unknown, bytes});
        spool.append(ids[1], Frame{3, 60, LinkType::ethernet, Direction::unknown, bytes});
        std::this_thread::sleep_for(5ms);
        spool.tick(ids[0]);
        writer.flush();
        EXPECT_EQ(scalar(db, "SELECT count(*) FROM capture_chunks WHERE point_id = 1"), 2) << "old: handed over";
        EXPECT_EQ(scalar(db, "SELECT count(*) FROM capture_chunks WHERE point_id = 2"), 0) << "not ticked yet";
        spool.flush(ids[1]);
        EXPECT_THROW(spool.append(99, Frame{}), Error) << "a point the spool was not made for";
    }
    writer.close();
    EXPECT_EQ(spool_size(db).chunks, 3U);
    EXPECT_EQ(spool_size(db).frames, 3U);
}

TEST(Spool, a_different_link_type_starts_a_new_chunk) {
    Database db = Database::open_memory();
    Point a;
    a.name = "a";
    const std::vector<std::uint32_t> ids{static_cast<std::uint32_t>(db.add_point(a))};
    Writer writer(db);
    Spool spool(writer, ids);
    const std::vector<std::uint8_t> bytes(20, 0x45);
    spool.append(ids[0], Frame{1, 20, LinkType::ethernet, Direction::unknown, bytes});
    spool.append(ids[0], Frame{2, 20, LinkType::raw, Direction::unknown, bytes});
    spool.flush(ids[0]);
    writer.close();
    Statement stmt =
        db.prepare("SELECT group_concat(link_type, ',') FROM (SELECT link_type FROM capture_chunks ORDER BY id)");
    ASSERT_TRUE(stmt.step());
    EXPECT_EQ(stmt.column_text(0), "1,101");
}

}  // namespace
}  // namespace hoptrace::store
