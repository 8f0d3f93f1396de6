#pragma once
// The capture spool: while a live capture runs, each point's thread appends its frames, as captured, to a chunk
// of its own (store/chunk.hpp) and hands full chunks to a SpoolFile, whose thread appends each to a plain file
// beside the database (FILE-spool) with one writev(). No dissecting, no row per packet and no SQLite at all per
// chunk while capturing: that work would compete with the traffic. After the capture stops, ingest_spool() reads
// the file from the start and turns the chunks into `packets` rows through dissect() and the Writer, the same
// rows an import of the same frames makes, then removes the file. The file is the durable record of a capture
// until then: `meta` names it before its first chunk is written, so a capture that was killed leaves it behind
// and `hoptrace correlate` (or import) stores it first.

#include "store/chunk.hpp"
#include "store/database.hpp"
#include "store/worker_queue.hpp"
#include "store/writer.hpp"
#include "tracer/handles.hpp"
#include "tracer/packet.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hoptrace::store {

// The `meta` keys of a pending spool: its file name (in the database's directory), and how many of its bytes are
// stored as packets rows (advanced in the transaction that inserts them).
inline constexpr const char* k_meta_spool_file = "spool_file";
inline constexpr const char* k_meta_spool_stored = "spool_stored_bytes";
// A capture window cut short: when the spool lost frames (a full disk), the window ends before the first one lost,
// and the live points' frames stamped after it would be packets only some points saw. Written with the window.
inline constexpr const char* k_meta_spool_cut = "spool_cut_ns";

// When a point's chunk is handed over to the SpoolFile: once it holds `chunk_bytes` bytes of records or
// `chunk_frames` frames, or once its first frame waited `chunk_age` (so a quiet point's frames reach the file
// too). Memory: one chunk per point plus the SpoolFile's bounded queue of them; a capture thread blocks while the
// queue is full (the kernel then drops, and counts, what its ring cannot hold: nothing is lost silently).
struct SpoolLimits {
    std::size_t chunk_bytes = std::size_t{1} << 20;
    std::uint32_t chunk_frames = 16384;
    std::chrono::milliseconds chunk_age{1000};
};

// The spool file of a capture, written by a thread of its own. Creating it (mode 0600, O_EXCL|O_NOFOLLOW) truncates
// a file of that name only when it is a regular file of ours (one a database of the same name left behind: this
// database does not name it), and refuses a symbolic link or anything else (store/private_file.hpp); it locks the
// file (flock) against an ingest by another process while the capture runs, and records it in the database's `meta`
// before any chunk is written.
class SpoolFile {
public:
    static constexpr std::size_t k_max_pending_chunks = 16;

    // `db` must be a file database with no pending spool.
    explicit SpoolFile(Database& db);
    SpoolFile(const SpoolFile&) = delete;
    SpoolFile& operator=(const SpoolFile&) = delete;
    ~SpoolFile();  // close()s, swallowing errors (call close() yourself to see them)

    // Thread-safe. Appends the chunk after every chunk handed over before; blocks while k_max_pending_chunks are in
    // the spool thread's hands (the one being written included).
    // Returns the (cleared) buffer of a chunk already written, for the next chunk, or an empty vector: a capture
    // then reuses a few buffers instead of allocating and faulting in a fresh one per chunk. Rethrows a failed
    // write (Error naming the file: disk full …).
    std::vector<std::uint8_t> append(SpoolChunk chunk);
    // Waits until everything handed over is written, then stops the thread and closes the file (unlocking it).
    // Idempotent. Rethrows a failed write.
    void close();

    [[nodiscard]] const std::string& path() const noexcept { return m_path; }
    [[nodiscard]] std::uint64_t bytes_written() const noexcept;
    // The file system filled: a chunk was not written because the free space fell below the reserve (or a write
    // failed with ENOSPC/EDQUOT, and the file was cut back to its last whole chunk). The spool then takes no more
    // chunks (append throws Error with disk_full()); what it holds stays whole and storable.
    [[nodiscard]] bool disk_full() const noexcept;
    // After a failed write: the earliest frame of a chunk that was handed over but never written (those chunks are
    // lost; every point's frames before it are in the file). nullopt while nothing was lost.
    [[nodiscard]] std::optional<std::int64_t> lost_from() const noexcept;
    // The free space a capture leaves on the spool's file system so that what it spooled can still be stored and
    // correlated where it is: a headroom for the database's small writes (an eighth of the file system, at most
    // 8 MiB), plus what the rows cost beyond the spool's bytes, the spool's bytes themselves being freed as they are
    // stored (ingest_spool): k_reserve_per_frame per frame (a row's columns and indexes, its journey) and a
    // k_reserve_fraction-th of the bytes (the slack of pages that hold one or two frames: 37 MB of database for
    // 26 MB of 1442-byte frames, measured on a tmpfs that the capture filled).
    static constexpr std::uint64_t k_reserve_per_frame = 256;
    static constexpr std::uint64_t k_reserve_fraction = 2;
    [[nodiscard]] std::uint64_t reserve_bytes() const noexcept;
    // The most chunks that were ever in the thread's hands at once (never above k_max_pending_chunks).
    [[nodiscard]] std::size_t peak_pending_chunks() const noexcept;

private:
    using Lock = WorkerQueue<SpoolChunk>::Lock;
    // On the queue's thread: writes the chunk whole, or (the disk filled) cuts the file back to the chunks before.
    void write_whole_chunk(const SpoolChunk& chunk);
    void write_chunk(const SpoolChunk& chunk);
    // With the queue's lock.
    void chunk_written(SpoolChunk& chunk);
    void note_lost(const SpoolChunk& chunk);

    std::string m_path;
    UniqueFd m_fd;
    std::uint64_t m_headroom = 0;
    // Guarded by the queue's lock.
    std::optional<std::int64_t> m_lost_from;
    std::vector<std::vector<std::uint8_t>> m_spare_buffers;
    std::uint64_t m_bytes = 0;
    std::uint64_t m_frames = 0;
    bool m_disk_full = false;
    bool m_closed = false;
    WorkerQueue<SpoolChunk> m_queue;  // last: its thread starts once everything above is constructed
};

class Spool {
public:
    // One buffer per point id. `file` must outlive the spool.
    Spool(SpoolFile& file, std::span<const std::uint32_t> point_ids, SpoolLimits limits = {});

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

    SpoolFile& m_file;
    SpoolLimits m_limits;
    std::vector<std::unique_ptr<PointBuffer>> m_points;
};

// What waits in the database's spool file (chunks and frames after the stored bytes; a torn last chunk not
// counted). `pending` is false when the database names no spool. `legacy_frames`: frames that a development build
// (7824020) left in a `capture_chunks` table, which this build does not read (see ingest_spool).
struct SpoolSize {
    bool pending = false;
    std::string path;
    std::uint64_t chunks = 0;
    std::uint64_t frames = 0;
    std::uint64_t legacy_frames = 0;
};
SpoolSize spool_size(const Database& db);

struct SpoolIngest {
    std::uint64_t chunks = 0;  // stored as packets
    std::uint64_t frames = 0;
    bool stopped = false;  // progress() asked to stop; the rest stays spooled
    std::string torn;      // one line when the file ended inside its last chunk (what was lost), else ""
};

// Turns every chunk of the spool file into `packets` rows, in the file's order: each frame goes through dissect()
// and `writer` like an imported one, and each chunk's rows are inserted in the same transaction that advances
// meta's spool_stored_bytes past the chunk (Writer::add_rows), so a crash at any moment leaves every frame exactly
// once: in a row, or in the file after the stored bytes. Reading and dissecting the next chunk overlaps the
// writer thread's inserting of the last. When every chunk is stored the meta keys are removed (after a WAL
// checkpoint, so the rows are on disk) and then the file. A file that ends inside its last chunk (a capture killed
// while writing it) is stored up to that chunk and `torn` says how many frames of which point were lost.
// `progress` (may be empty) is called after each chunk with the frames so far; returning false stops there.
// Every k_punch_bytes the chunks already stored are checkpointed into the database and their bytes freed in the file
// (fallocate PUNCH_HOLE, where the file system can): storing a spool then needs room for little more than the rows.
// Waits until what it handed over is committed. Throws Error when the file is missing, locked by a running
// capture, damaged before its end (naming the byte, and how to skip the chunk), or when the database holds
// chunks of the old capture_chunks table. Returns at once when the database names no spool.
inline constexpr std::uint64_t k_punch_bytes = std::uint64_t{32} << 20;
// The spool's last transaction, which stops naming it, also applies a pending window cut (apply_spool_cut).
SpoolIngest ingest_spool(Database& db, Writer& writer, const std::function<bool(std::uint64_t frames)>& progress = {});

// A pending cut (meta spool_cut_ns): deletes the live points' packets stamped after it, recounts their
// points.packets and removes the key — in the caller's transaction. Imported points are never touched. False when
// none was pending.
bool apply_spool_cut(Database& db);

}  // namespace hoptrace::store
