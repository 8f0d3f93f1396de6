#pragma once
// The capture spool: while a live capture runs, each point's thread appends its frames, as captured, to a chunk
// of its own (store/chunk.hpp) and hands full chunks to the Writer, which stores each as one row of
// `capture_chunks`. No dissecting and no row per packet while capturing: that work (SQLite's per-row INSERT
// and index upkeep) would compete with the traffic. After the capture stops, ingest_spool() turns the chunks
// into `packets` rows through dissect() and the Writer, the same rows an import of the same frames makes.
// The chunks are the durable record of a capture until then: a capture that was killed leaves them behind,
// and `hoptrace correlate` stores them first.

#include "store/chunk.hpp"
#include "store/database.hpp"
#include "store/writer.hpp"
#include "tracer/packet.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

namespace hoptrace::store {

// When a point's chunk is handed over to the Writer: once it holds `chunk_bytes` bytes of records or
// `chunk_frames` frames, or once its first frame waited `chunk_age` (so a quiet point's frames reach the database
// too). Memory: one chunk per point plus the Writer's bounded queue of them; a capture thread blocks while the
// queue is full (the kernel then drops, and counts, what its ring cannot hold: nothing is lost silently).
struct SpoolLimits {
    std::size_t chunk_bytes = std::size_t{1} << 20;
    std::uint32_t chunk_frames = 16384;
    std::chrono::milliseconds chunk_age{1000};
};

class Spool {
public:
    // One buffer per point id. `writer` must outlive the spool.
    Spool(Writer& writer, std::span<const std::uint32_t> point_ids, SpoolLimits limits = {});

    // On the point's own capture thread only (each buffer has one producer; no lock). Copies the frame.
    void append(std::uint32_t point_id, const Frame& frame);
    // On the point's thread: hands its chunk over if its first frame waited longer than the limit.
    void tick(std::uint32_t point_id);
    // Hands the point's chunk over, whatever its size: on the point's thread, or on any thread once it stopped.
    void flush(std::uint32_t point_id);

private:
    // One cache line each at least: the points' threads write their own buffers at once.
    struct alignas(64) PointBuffer {
        PointBuffer(std::uint32_t id, std::size_t reserve) : point_id(id), builder(id, reserve) {}
        std::uint32_t point_id;
        ChunkBuilder builder;
        std::chrono::steady_clock::time_point started{};  // when the chunk's first frame came
    };
    PointBuffer& buffer(std::uint32_t point_id);
    void hand_over(PointBuffer& buffer);

    Writer& m_writer;
    SpoolLimits m_limits;
    std::vector<std::unique_ptr<PointBuffer>> m_points;
};

// The connection's settings while a capture spools and its spool is stored, restored when it is destroyed (call
// restore() to see an error):
// - checkpoints (copying the WAL into the database file: read back, write again, fsync) wait until the spool is
//   stored, unless the WAL grows past k_wal_pages first; a chunk's pages that rows have reused by then are never
//   copied into the file as chunk data;
// - a small page cache: chunks and rows are only appended, and a cache that grows to its 64 MiB with every new page
//   costs a fresh allocation (and page faults) per page written.
class SpoolSettings {
public:
    static constexpr int k_wal_pages = 65536;  // 256 MiB of 4 KiB pages
    static constexpr int k_cache_kib = 4096;
    explicit SpoolSettings(Database& db);
    SpoolSettings(const SpoolSettings&) = delete;
    SpoolSettings& operator=(const SpoolSettings&) = delete;
    ~SpoolSettings();
    void restore();

private:
    Database& m_db;
    std::int64_t m_wal_pages = 0;
    std::int64_t m_cache_size = 0;
    bool m_restored = false;
};

// What is waiting in capture_chunks.
struct SpoolSize {
    std::uint64_t chunks = 0;
    std::uint64_t frames = 0;
};
SpoolSize spool_size(const Database& db);

struct SpoolIngest {
    std::uint64_t chunks = 0;  // stored as packets and removed from the spool
    std::uint64_t frames = 0;
    bool stopped = false;  // progress() asked to stop; the rest stays spooled
};

// Turns every spooled chunk into `packets` rows, oldest chunk first: each frame goes through dissect() and
// `writer` like an imported one, and each chunk's rows are inserted in the same transaction that deletes the
// chunk (Writer::add_rows), so a crash at any moment leaves every frame exactly once: in a chunk or in a row.
// Reading and dissecting the next chunk overlaps the writer thread's inserting of the last. `progress` (may be
// empty) is called after each chunk with the frames so far; returning false stops there. Waits until what it
// handed over is committed. Throws Error naming the chunk when a chunk's data is damaged (it stays spooled).
SpoolIngest ingest_spool(Database& db, Writer& writer, const std::function<bool(std::uint64_t frames)>& progress = {});

}  // namespace hoptrace::store
