// The capture spool: the chunk record format and its framing in the spool file, and ingest_spool() turning the
// file's chunks into the same `packets` rows an import of the same frames makes, exactly once even when the process
// dies in the middle, with a torn last chunk reported and never mis-read. Real frames from the captures in
// tests/data, real files, the real SQLite, no mocks.

#include "store/spool.hpp"
#include "store/chunk.hpp"
#include "store/database.hpp"
#include "store/import.hpp"
#include "store/writer.hpp"
#include "tracer/capture_file.hpp"

#include <gtest/gtest.h>

#include "temp_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hoptrace::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test::TempDir;

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
            import_file(db, writer, {std::string("p").append(std::to_string(i)), data(k_captures[i]), {}});
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

// What a live capture does: a spool file beside the database, each frame appended to its point's buffer, chunks
// handed to the file's thread as they fill.
void spool_frames(Database& db, const std::vector<std::uint32_t>& point_ids, const std::vector<OwnedFrame>& frames,
                  SpoolLimits limits) {
    SpoolFile file(db);
    Spool spool(file, point_ids, limits);
    for (const OwnedFrame& f : frames) {
        spool.append(f.point_id, f.frame());
    }
    for (const std::uint32_t id : point_ids) {
        spool.flush(id);
    }
    file.close();
}

SpoolIngest ingest(Database& db) {
    Writer writer(db);
    const SpoolIngest result = ingest_spool(db, writer);
    writer.close();
    return result;
}

std::vector<std::uint8_t> file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::uint64_t get_u64(const std::vector<std::uint8_t>& bytes, std::size_t at) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        v |= static_cast<std::uint64_t>(bytes[at + i]) << (8 * i);
    }
    return v;
}

// The chunks of a spool file as (offset, point id, frames), walked with the documented framing.
struct FramedChunk {
    std::size_t offset;
    std::uint32_t point_id;
    std::uint32_t frames;
    std::size_t end;
};
std::vector<FramedChunk> framed_chunks(const std::vector<std::uint8_t>& bytes) {
    std::vector<FramedChunk> out;
    std::size_t offset = 0;
    while (offset + k_chunk_header <= bytes.size()) {
        const std::size_t end = offset + k_chunk_header + get_u64(bytes, offset + 32) + k_chunk_trailer;
        if (end > bytes.size()) {
            break;
        }
        out.push_back({offset, static_cast<std::uint32_t>(get_u64(bytes, offset + 4) & 0xffffffffU),
                       static_cast<std::uint32_t>(get_u64(bytes, offset + 12) & 0xffffffffU), end});
        offset = end;
    }
    return out;
}

// A file database with the reference's points and the frames spooled, as a capture leaves it when killed after
// its last chunk was written.
struct Spooled {
    TempDir dir;
    std::string path = dir.file("capture.db");
    std::string spool = path + "-spool";
};

std::string meta_or(const Database& db, const char* key, const std::string& absent) {
    return db.meta(key).value_or(absent);
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

TEST(ChunkFormat, a_chunk_in_the_file_is_a_checked_header_the_records_and_a_trailer) {
    ChunkBuilder builder(7);
    const std::vector<std::uint8_t> bytes{0xaa, 0xbb, 0xcc};
    builder.append(Frame{5, 3, LinkType::linux_sll2, Direction::outbound, bytes});
    builder.append(Frame{3, 3, LinkType::linux_sll2, Direction::inbound, bytes});
    const SpoolChunk chunk = builder.take();
    std::array<std::uint8_t, k_chunk_header> header{};
    std::array<std::uint8_t, k_chunk_trailer> trailer{};
    encode_chunk_frame(chunk, header, trailer);
    const std::vector<std::uint8_t> want_start{'H', 'T', 'S', 'C', 7, 0, 0, 0, 0x14, 0x01, 0, 0, 2, 0, 0, 0,
                                               3,   0,   0,   0,   0, 0, 0, 0, 5,    0,    0, 0, 0, 0, 0, 0};
    EXPECT_TRUE(std::equal(want_start.begin(), want_start.end(), header.begin()));
    EXPECT_EQ(header[32], chunk.data.size());  // data_len, 8 bytes
    EXPECT_EQ(trailer[0], 'H');
    EXPECT_EQ(trailer[3], 'E');
    EXPECT_TRUE(std::equal(header.begin() + 40, header.end(), trailer.begin() + 4)) << "the check, twice";

    const auto decoded = decode_chunk_header(header);
    ASSERT_TRUE(decoded.has_value()) << decoded.error();
    EXPECT_EQ(decoded->point_id, 7U);
    EXPECT_EQ(decoded->link_type, LinkType::linux_sll2);
    EXPECT_EQ(decoded->frames, 2U);
    EXPECT_EQ(decoded->first_ts_ns, 3);
    EXPECT_EQ(decoded->last_ts_ns, 5);
    EXPECT_EQ(decoded->data_len, chunk.data.size());
    EXPECT_TRUE(is_chunk_trailer(*decoded, trailer));
    trailer[5] ^= 1;
    EXPECT_FALSE(is_chunk_trailer(*decoded, trailer));

    for (const std::size_t at : {std::size_t{0}, std::size_t{13}, std::size_t{41}}) {  // magic, a field, the check
        auto bad = header;
        bad[at] ^= 0x10;
        EXPECT_FALSE(decode_chunk_header(bad).has_value()) << "byte " << at;
    }
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
        const Spooled s;
        Database spooled = Database::open(s.path);
        const auto ids = copy_points(reference, spooled);
        spool_frames(spooled, ids, frames, limits);
        EXPECT_EQ(scalar(spooled, "SELECT count(*) FROM packets"), 0) << "nothing is dissected while spooling";
        EXPECT_EQ(scalar(spooled, "SELECT sum(packets) FROM points"), 0);
        EXPECT_EQ(meta_or(spooled, k_meta_spool_file, "-"), "capture.db-spool");
        EXPECT_EQ(meta_or(spooled, k_meta_spool_stored, "-"), "0");
        const auto chunks = framed_chunks(file_bytes(s.spool));
        std::uint64_t framed = 0;
        for (const FramedChunk& c : chunks) {
            framed += c.frames;
        }
        EXPECT_EQ(framed, frames.size());
        EXPECT_EQ(chunks.back().end, fs::file_size(s.spool)) << "chunks back to back, nothing after the last";
        EXPECT_GE(chunks.size(), ids.size());
        const SpoolSize size = spool_size(spooled);
        EXPECT_TRUE(size.pending);
        EXPECT_EQ(size.path, s.spool);
        EXPECT_EQ(size.chunks, chunks.size());
        EXPECT_EQ(size.frames, frames.size());

        const SpoolIngest result = ingest(spooled);
        EXPECT_EQ(result.chunks, chunks.size());
        EXPECT_EQ(result.frames, frames.size());
        EXPECT_FALSE(result.stopped);
        EXPECT_EQ(result.torn, "");
        EXPECT_FALSE(fs::exists(s.spool)) << "the file goes once it is stored";
        EXPECT_FALSE(spooled.meta(k_meta_spool_file).has_value());
        EXPECT_FALSE(spooled.meta(k_meta_spool_stored).has_value());
        EXPECT_FALSE(spool_size(spooled).pending);

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

TEST(SpoolIngest, a_database_without_a_spool_has_nothing_to_store) {
    const Spooled s;
    Database db = Database::open(s.path);
    EXPECT_FALSE(spool_size(db).pending);
    const SpoolIngest result = ingest(db);
    EXPECT_EQ(result.chunks, 0U);
    EXPECT_FALSE(fs::exists(s.spool));
}

TEST(SpoolIngest, progress_may_stop_after_a_chunk_and_a_second_ingest_stores_the_rest) {
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    const Spooled s;
    Database db = Database::open(s.path);
    spool_frames(db, copy_points(reference, db), frames, SpoolLimits{4096, 1000, 1000ms});
    const auto chunks = framed_chunks(file_bytes(s.spool));
    ASSERT_GT(chunks.size(), 10U);

    SpoolIngest first;
    {
        Writer writer(db);
        std::uint64_t calls = 0;
        first = ingest_spool(db, writer, [&](std::uint64_t) { return ++calls < 3; });
        writer.close();
    }
    EXPECT_TRUE(first.stopped);
    EXPECT_EQ(first.chunks, 3U);
    EXPECT_TRUE(fs::exists(s.spool));
    EXPECT_EQ(meta_or(db, k_meta_spool_stored, "-"), std::to_string(chunks[2].end));
    EXPECT_EQ(spool_size(db).chunks, chunks.size() - 3);
    EXPECT_EQ(static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM packets")), first.frames);

    const SpoolIngest rest = ingest(db);
    EXPECT_EQ(first.frames + rest.frames, frames.size());
    EXPECT_EQ(packet_rows(db), packet_rows(reference));
    EXPECT_FALSE(fs::exists(s.spool));
}

TEST(SpoolIngest, a_spool_file_a_running_capture_writes_is_not_stored_by_anyone_else) {
    const Spooled s;
    Database db = Database::open(s.path);
    Point point;
    point.name = "p";
    db.add_point(point);
    SpoolFile file(db);
    Database other = Database::open(s.path);
    Writer writer(other);
    try {
        ingest_spool(other, writer);
        ADD_FAILURE() << "stored a spool while it is being written";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("a running capture is writing this spool"), std::string::npos) << e.what();
    }
    writer.close();
    EXPECT_THROW(SpoolFile second(db), Error) << "one spool per database";
    file.close();
    EXPECT_EQ(ingest(other).chunks, 0U);
    EXPECT_FALSE(fs::exists(s.spool));
}

// ---------------------------------------------------------------------------------------------------------------
// Exactly once

TEST(SpoolIngest, a_failed_transaction_keeps_the_chunk_and_adds_none_of_its_rows) {
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    const Spooled s;
    Database db = Database::open(s.path);
    const auto ids = copy_points(reference, db);
    spool_frames(db, ids, frames, SpoolLimits{1U << 20, 16384, 1000ms});  // one chunk per point
    const auto chunks = framed_chunks(file_bytes(s.spool));
    // The chunk of the third point refers to a point that is not there (foreign keys are off): the writer's
    // transaction for its rows fails after inserting them.
    db.exec("DELETE FROM points WHERE id = 3");
    ASSERT_EQ(chunks[2].point_id, 3U);
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
    EXPECT_EQ(meta_or(db, k_meta_spool_stored, "-"), std::to_string(chunks[2].offset)) << "the chunks before it";
    // Every frame is in exactly one place.
    EXPECT_EQ(static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM packets")) + spool_size(db).frames,
              frames.size());
    EXPECT_TRUE(fs::exists(s.spool));
}

TEST(SpoolIngest, rows_of_bytes_another_process_stored_are_not_added) {
    const Spooled s;
    Database db = Database::open(s.path);
    Point point;
    point.name = "p";
    const auto id = static_cast<std::uint32_t>(db.add_point(point));
    db.set_meta(k_meta_spool_stored, "100");
    Writer writer(db);
    Writer::PacketRows rows;
    PacketRecord record;
    record.point_id = id;
    record.ts_ns = 1;
    const std::vector<std::uint8_t> raw{1, 2, 3};
    rows.add(record, raw);
    writer.add_rows(std::move(rows), 0, 60);  // the marker is past these bytes: another process stored them
    try {
        writer.close();
        ADD_FAILURE() << "close() did not report the stored bytes";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("bytes from 0 are stored already"), std::string::npos) << e.what();
    }
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 0);
    EXPECT_EQ(scalar(db, "SELECT packets FROM points"), 0);
    EXPECT_EQ(meta_or(db, k_meta_spool_stored, "-"), "100");
}

// Three one-frame chunks of one point, spooled through a SpoolFile.
std::vector<FramedChunk> three_chunks(Database& db, std::uint32_t& id) {
    Point point;
    point.name = "p";
    id = static_cast<std::uint32_t>(db.add_point(point));
    const std::vector<std::uint8_t> bytes(60, 1);
    SpoolFile file(db);
    for (int chunk = 0; chunk < 3; ++chunk) {
        ChunkBuilder builder(id);
        builder.append(Frame{chunk, 60, LinkType::ethernet, Direction::unknown, bytes});
        if (chunk == 2) {
            builder.append(Frame{chunk, 60, LinkType::ethernet, Direction::unknown, bytes});
        }
        file.append(builder.take());
    }
    file.close();
    return framed_chunks(file_bytes(db.path() + "-spool"));
}

void overwrite(const std::string& path, std::size_t at, std::uint8_t value) {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(static_cast<char>(value));
}

TEST(SpoolIngest, a_damaged_chunk_before_the_end_is_an_error_naming_it_and_stays_spooled) {
    for (const char* damage : {"record", "header", "trailer"}) {
        const Spooled s;
        Database db = Database::open(s.path);
        std::uint32_t id = 0;
        const auto chunks = three_chunks(db, id);
        ASSERT_EQ(chunks.size(), 3U);
        const std::string what = damage;
        if (what == "record") {
            overwrite(s.spool, chunks[1].offset + k_chunk_header + 16, 9);  // the direction of its first record
        } else if (what == "header") {
            overwrite(s.spool, chunks[1].offset + 20, 0x77);  // first_ts_ns: the check no longer matches
        } else {
            overwrite(s.spool, chunks[1].end - 1, 0x77);
        }
        Writer writer(db);
        try {
            ingest_spool(db, writer);
            ADD_FAILURE() << what << ": no error for the damaged chunk";
        } catch (const Error& e) {
            const std::string message = e.what();
            EXPECT_NE(message.find("the chunk at byte " + std::to_string(chunks[1].offset)), std::string::npos)
                << message;
            EXPECT_NE(message.find("is damaged"), std::string::npos) << message;
            const std::string skip = what == "header" ? std::to_string(fs::file_size(s.spool))
                                                      : std::to_string(chunks[1].end);
            EXPECT_NE(message.find("UPDATE meta SET value = '" + skip + "' WHERE key = 'spool_stored_bytes'"),
                      std::string::npos)
                << message;
        }
        writer.close();  // the chunk before it is stored
        EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 1) << what;
        EXPECT_EQ(meta_or(db, k_meta_spool_stored, "-"), std::to_string(chunks[1].offset)) << what;
        EXPECT_TRUE(fs::exists(s.spool));
        if (what != "header") {
            // What the message says to do goes on without that chunk's frame.
            db.set_meta(k_meta_spool_stored, std::to_string(chunks[1].end));
            EXPECT_EQ(ingest(db).frames, 2U) << what;
            EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 3) << what;
        }
    }
}

// A capture killed while its thread wrote a chunk leaves a file that ends inside it: the chunks before it are
// stored, and one line says how many frames of which point the cut-off chunk held.
TEST(SpoolIngest, a_torn_last_chunk_is_reported_with_its_frames_and_point_and_never_read) {
    const Spooled full;
    std::vector<FramedChunk> chunks;
    {
        Database db = Database::open(full.path);
        std::uint32_t id = 0;
        chunks = three_chunks(db, id);
    }
    ASSERT_EQ(chunks.size(), 3U);
    const std::size_t last = chunks[2].offset;
    const std::size_t size = chunks[2].end;
    // Cut inside the header, at its end, inside the first record, at the last byte of data, inside the trailer.
    for (const std::size_t cut : {last + 1, last + k_chunk_header, last + k_chunk_header + 20, size - k_chunk_trailer,
                                  size - 1}) {
        const Spooled s;
        fs::copy_file(full.path, s.path);
        fs::copy_file(full.spool, s.spool);
        fs::resize_file(s.spool, cut);
        Database db = Database::open(s.path);
        EXPECT_EQ(spool_size(db).frames, 2U) << "cut at " << cut << ": a torn chunk is not counted";
        const SpoolIngest result = ingest(db);
        EXPECT_EQ(result.frames, 2U) << "cut at " << cut;
        EXPECT_EQ(scalar(db, "SELECT count(*) FROM packets"), 2) << "cut at " << cut;
        if (cut < last + k_chunk_header) {
            EXPECT_NE(result.torn.find("ends inside a chunk header"), std::string::npos) << result.torn;
        } else {
            EXPECT_NE(result.torn.find("ends inside its last chunk (at byte " + std::to_string(last) + " of " +
                                       std::to_string(cut)),
                      std::string::npos)
                << result.torn;
            EXPECT_NE(result.torn.find("2 frames of point 'p' are lost"), std::string::npos) << result.torn;
        }
        EXPECT_EQ(result.torn.find('\n'), std::string::npos) << "one line";
        EXPECT_EQ(meta_or(db, "spool_lost", ""), result.torn);
        EXPECT_FALSE(fs::exists(s.spool));
        EXPECT_FALSE(spool_size(db).pending);
    }
}

// The process dies (SIGKILL) at some moment of an ingest: between chunks, while the writer thread inserts, or while
// it commits. Afterwards every frame is in exactly one place, a packets row or the file after the stored bytes,
// and a second ingest stores the rest: the same rows as the reference import, none twice.
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
    const auto chunks = static_cast<std::int64_t>(framed_chunks(file_bytes(original + "-spool")).size());
    ASSERT_GT(chunks, 50);
    std::fprintf(stderr, "%lld chunks\n", static_cast<long long>(chunks));
    const std::string backup = dir.file("spool-backup");
    fs::copy_file(original + "-spool", backup);

    int killed_mid_way = 0;
    for (int round = 0; round < 12; ++round) {
        const std::string path = dir.file("crash" + std::to_string(round) + ".db");
        fs::copy_file(original, path);
        // The copy names its spool "spooled.db-spool" (meta holds the file's name, found in the database's
        // directory): each round starts from the original spool file.
        fs::copy_file(backup, original + "-spool", fs::copy_options::overwrite_existing);
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
        const SpoolSize left = spool_size(db);
        const auto spooled = static_cast<std::int64_t>(left.frames);
        EXPECT_EQ(rows + spooled, static_cast<std::int64_t>(frames.size()))
            << "round " << round << ": " << rows << " rows + " << spooled << " spooled frames";
        EXPECT_EQ(scalar(db, "SELECT sum(packets) FROM points"), rows) << "round " << round;
        if (WIFSIGNALED(status) && rows > 0 && spooled > 0) {
            ++killed_mid_way;
        }
        std::fprintf(stderr, "round %d: %s, %lld rows + %lld spooled\n", round,
                     WIFSIGNALED(status) ? "killed" : "finished", static_cast<long long>(rows),
                     static_cast<long long>(spooled));
        if (left.pending) {
            ingest(db);
        }
        EXPECT_FALSE(spool_size(db).pending);
        EXPECT_EQ(packet_rows(db), want) << "round " << round;
    }
    EXPECT_GE(killed_mid_way, 2) << "the kills should land in the middle of the ingest";
}

// The capture side killed (SIGKILL) while its file thread writes: whatever moment it lands, the file holds whole
// chunks and at most one torn one at its end, and the ingest stores every whole chunk: per point a prefix of what
// was spooled, in order, none twice, nothing mis-read.
TEST(SpoolFile, a_capture_killed_while_writing_leaves_whole_chunks_and_at_most_a_torn_tail) {
    Database reference = Database::open_memory();
    const auto frames = import_reference(reference);
    const auto want = packet_rows(reference);
    int torn = 0;
    for (int round = 0; round < 8; ++round) {
        const Spooled s;
        {
            Database db = Database::open(s.path);
            copy_points(reference, db);
        }
        const pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            Database db = Database::open(s.path);
            std::vector<std::uint32_t> ids;
            for (const Point& p : db.points()) {
                ids.push_back(static_cast<std::uint32_t>(p.id));
            }
            SpoolFile file(db);
            // Small chunks and large ones (a torn write is likelier in a large one).
            const std::size_t chunk_bytes = round % 2 == 0 ? 1024 + static_cast<std::size_t>(round) * 700 : 1U << 18;
            Spool spool(file, ids, SpoolLimits{chunk_bytes, 100000, 1000ms});
            // Once the file holds a few chunks, at a moment that differs from round to round.
            std::thread killer([round, &file] {
                while (file.bytes_written() < std::uint64_t{100000} * static_cast<std::uint64_t>(round + 1)) {
                    std::this_thread::yield();
                }
                std::this_thread::sleep_for(std::chrono::microseconds(round * 37));
                raise(SIGKILL);
            });
            for (;;) {  // until the kill: the same frames again and again
                for (const OwnedFrame& f : frames) {
                    spool.append(f.point_id, f.frame());
                }
            }
        }
        int status = 0;
        ASSERT_EQ(waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status));
        const auto bytes = file_bytes(s.spool);
        const auto chunks = framed_chunks(bytes);
        const std::size_t whole = chunks.empty() ? 0 : chunks.back().end;
        Database db = Database::open(s.path);
        const SpoolIngest result = ingest(db);
        std::uint64_t framed = 0;
        for (const FramedChunk& c : chunks) {
            framed += c.frames;
        }
        EXPECT_EQ(result.frames, framed) << "round " << round;
        EXPECT_EQ(result.torn.empty(), whole == bytes.size()) << "round " << round << ": " << result.torn;
        torn += result.torn.empty() ? 0 : 1;
        // Per point, the rows are the reference's rows of that point, repeated pass after pass, cut anywhere.
        const auto got = packet_rows(db);
        std::map<std::string, std::vector<const std::vector<std::string>*>> want_by_point;
        for (const auto& row : want) {
            want_by_point[row[0]].push_back(&row);
        }
        std::map<std::string, std::size_t> seen;
        for (const auto& row : got) {
            const auto& list = want_by_point[row[0]];
            ASSERT_FALSE(list.empty());
            const std::size_t i = seen[row[0]]++;
            ASSERT_EQ(row, *list[i % list.size()]) << "round " << round << " point " << row[0] << " row " << i;
        }
        std::fprintf(stderr, "round %d: %zu bytes, %zu whole chunks, %llu rows%s%s\n", round, bytes.size(),
                     chunks.size(), static_cast<unsigned long long>(result.frames), result.torn.empty() ? "" : "; ",
                     result.torn.c_str());
    }
    std::fprintf(stderr, "%d of 8 kills tore a chunk\n", torn);
}

TEST(SpoolIngest, chunks_left_in_capture_chunks_by_7824020_are_refused_with_what_to_do) {
    const Spooled s;
    Database db = Database::open(s.path);
    db.exec(
        "CREATE TABLE capture_chunks (id INTEGER PRIMARY KEY, point_id INTEGER NOT NULL, link_type INTEGER NOT NULL, "
        "first_ts_ns INTEGER NOT NULL, last_ts_ns INTEGER NOT NULL, frames INTEGER NOT NULL, data BLOB NOT NULL)");
    EXPECT_EQ(ingest(db).frames, 0U) << "an empty table is no spool";
    db.exec("INSERT INTO capture_chunks VALUES (1, 1, 1, 0, 0, 5, x'')");
    EXPECT_EQ(spool_size(db).legacy_frames, 5U);
    Writer writer(db);
    try {
        ingest_spool(db, writer);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("5 captured packets wait in the capture_chunks table"), std::string::npos)
            << e.what();
    }
    writer.close();
}

// ---------------------------------------------------------------------------------------------------------------
// The capture side

TEST(Spool, a_quiet_points_chunk_is_handed_over_once_it_is_old_and_every_chunk_on_flush) {
    const Spooled s;
    Database db = Database::open(s.path);
    std::vector<std::uint32_t> ids;
    for (const char* name : {"a", "b"}) {
        Point p;
        p.name = name;
        ids.push_back(static_cast<std::uint32_t>(db.add_point(p)));
    }
    const std::vector<std::uint8_t> bytes(60, 7);
    // The file's thread has written a chunk once bytes_written() counts it.
    auto written = [&](SpoolFile& file, std::size_t chunks) {
        const auto until = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < until &&
               file.bytes_written() < chunks * (k_chunk_header + k_chunk_record_header + 60 + k_chunk_trailer)) {
            std::this_thread::sleep_for(1ms);
        }
        return framed_chunks(file_bytes(s.spool));
    };
    SpoolFile file(db);
    {
        // Young: an hour is far away whatever the machine's load.
        Spool spool(file, ids, SpoolLimits{1U << 20, 16384, std::chrono::hours(1)});
        spool.append(ids[0], Frame{1, 60, LinkType::ethernet, Direction::unknown, bytes});
        spool.tick(ids[0]);
        std::this_thread::sleep_for(20ms);
        EXPECT_EQ(file.bytes_written(), 0U) << "younger than the limit: kept";
        spool.flush(ids[0]);
        spool.flush(ids[1]);  // nothing there: no empty chunk
        EXPECT_EQ(written(file, 1).size(), 1U);
    }
    {
        Spool spool(file, ids, SpoolLimits{1U << 20, 16384, 1ms});
        spool.append(ids[0], Frame{2, 60, LinkType::ethernet, Direction::unknown, bytes});
        spool.append(ids[1], Frame{3, 60, LinkType::ethernet, Direction::unknown, bytes});
        std::this_thread::sleep_for(5ms);
        spool.tick(ids[0]);
        const auto chunks = written(file, 2);
        ASSERT_EQ(chunks.size(), 2U);
        EXPECT_EQ(chunks[1].point_id, ids[0]) << "old: handed over; b not ticked yet";
        spool.flush(ids[1]);
        EXPECT_THROW(spool.append(99, Frame{}), Error) << "a point the spool was not made for";
    }
    file.close();
    EXPECT_EQ(spool_size(db).chunks, 3U);
    EXPECT_EQ(spool_size(db).frames, 3U);
    EXPECT_LE(file.peak_pending_chunks(), SpoolFile::k_max_pending_chunks);
}

TEST(Spool, a_different_link_type_starts_a_new_chunk) {
    const Spooled s;
    Database db = Database::open(s.path);
    Point a;
    a.name = "a";
    const std::vector<std::uint32_t> ids{static_cast<std::uint32_t>(db.add_point(a))};
    SpoolFile file(db);
    Spool spool(file, ids);
    const std::vector<std::uint8_t> bytes(20, 0x45);
    spool.append(ids[0], Frame{1, 20, LinkType::ethernet, Direction::unknown, bytes});
    spool.append(ids[0], Frame{2, 20, LinkType::raw, Direction::unknown, bytes});
    spool.flush(ids[0]);
    file.close();
    const auto bytes_in_file = file_bytes(s.spool);
    const auto chunks = framed_chunks(bytes_in_file);
    ASSERT_EQ(chunks.size(), 2U);
    EXPECT_EQ(bytes_in_file[chunks[0].offset + 8], 1);    // LINKTYPE_ETHERNET
    EXPECT_EQ(bytes_in_file[chunks[1].offset + 8], 101);  // LINKTYPE_RAW
}

}  // namespace
}  // namespace hoptrace::store

namespace hoptrace::store {
namespace {

// Issue #13: a symbolic link planted as FILE-spool made a capture (as root: any file) truncate and overwrite the
// file it points to. The capture now refuses it, and neither the target nor the database's meta change.
TEST(SpoolFile, a_planted_symlink_is_refused_and_its_target_left_alone) {
    const Spooled s;
    const std::string victim = s.dir.file("victim.txt");
    std::ofstream(victim) << "the host's precious file";
    fs::create_symlink(victim, s.spool);
    Database db = Database::open(s.path);
    try {
        SpoolFile file(db);
        ADD_FAILURE() << "a spool through a symbolic link was created";
    } catch (const Error& e) {
        const std::string message = e.what();
        EXPECT_EQ(message.rfind(s.spool + ": ", 0), 0U) << message;
        EXPECT_NE(message.find("a symbolic link"), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
    std::ifstream in(victim);
    std::string text;
    std::getline(in, text);
    EXPECT_EQ(text, "the host's precious file");
    EXPECT_TRUE(fs::is_symlink(s.spool));
    EXPECT_FALSE(db.meta(k_meta_spool_file).has_value());
}

TEST(SpoolFile, is_created_mode_0600) {
    const mode_t old_mask = ::umask(022);
    const Spooled s;
    Database db = Database::open(s.path);
    {
        SpoolFile file(db);
        struct stat st {};
        ASSERT_EQ(::lstat(s.spool.c_str(), &st), 0);
        EXPECT_TRUE(S_ISREG(st.st_mode));
        EXPECT_EQ(st.st_mode & 07777, 0600U);
        file.close();
    }
    ::umask(old_mask);
}

}  // namespace
}  // namespace hoptrace::store
