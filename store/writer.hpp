#pragma once
// The packet writer: producers (import, the spool's ingest) hand PacketRecords plus their raw bytes to add()
// or add_rows(). A single writer thread (store/worker_queue.hpp) inserts them into `packets` in batched
// transactions. Memory is bounded: producers block while k_max_pending_batches batches are in the writer's hands.

#include "store/database.hpp"
#include "store/worker_queue.hpp"
#include "tracer/packet.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace hoptrace::store {

class Writer {
public:
    static constexpr std::size_t k_default_batch_rows = 4096;
    static constexpr std::size_t k_max_pending_batches = 16;
    // A batch is also handed over once its frames take this many bytes, so that memory stays bounded with
    // jumbo frames and GSO super-packets too (16 pending batches of 4096 x 64 KiB frames would be 4 GiB).
    static constexpr std::size_t k_max_batch_bytes = std::size_t{8} << 20;

    // `db` must outlive the writer.
    explicit Writer(Database& db, std::size_t batch_rows = k_default_batch_rows);
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    ~Writer();  // close()s, swallowing errors (call close() yourself to see them)

    // Packets with their frames back to back, handed over together by add_rows(); filled without any lock.
    struct PacketRows {
        PacketRows() { offsets.push_back(0); }
        void add(const PacketRecord& record, std::span<const std::uint8_t> raw);
        [[nodiscard]] std::size_t size() const noexcept { return records.size(); }
        [[nodiscard]] bool empty() const noexcept { return records.empty(); }

        std::vector<PacketRecord> records;
        std::vector<std::uint8_t> bytes;     // raw frames back to back
        std::vector<std::uint32_t> offsets;  // start of record i's frame in `bytes`; size = records + 1
    };

    // Thread-safe. Copies `raw` (the frame as captured). Throws the writer thread's Error if it failed.
    void add(const PacketRecord& record, std::span<const std::uint8_t> raw);

    // Thread-safe. Inserts `rows` (after everything added before) and, in the same transaction, advances meta's
    // spool_stored_bytes (store/spool.hpp) from `spool_from` to `spool_to`, the bytes of the spool file they were
    // read from: a chunk is either still spooled or entirely in `packets`, never both, never half. The transaction
    // fails (and the writer with it) if the marker is not at `spool_from` (another process stored those bytes).
    // Blocks while the queue is full.
    void add_rows(PacketRows rows, std::uint64_t spool_from, std::uint64_t spool_to);

    // Hands the current partial batch to the writer thread and waits until everything added so far is
    // committed. Thread-safe. Rethrows a writer-thread failure.
    void flush();

    // flush(), then stops the thread. Idempotent.
    void close();

    std::uint64_t rows_written() const noexcept;

    // The most batches that were ever in the writer thread's hands at once, the one being written included
    // (never above k_max_pending_batches).
    std::size_t peak_pending_batches() const noexcept;

private:
    // What one transaction writes.
    struct Batch {
        PacketRows rows;
        // The spool file bytes [from, to) that `rows` came from: meta's marker moves from `from` to `to`.
        std::optional<std::pair<std::uint64_t, std::uint64_t>> spooled;
        [[nodiscard]] bool empty() const noexcept { return rows.empty() && !spooled; }
    };
    class PacketInserter;  // writer.cpp: multi-row INSERTs, binding only the parameters that changed
    using Lock = WorkerQueue<Batch>::Lock;
    void write_batch(const Batch& batch);  // on the queue's thread
    // With the queue's lock: wait until a batch may be enqueued (or the writer failed), then enqueue m_filling if
    // it holds rows (and, with only_if_full, is still full: another producer may have handed it over meanwhile).
    void enqueue_filling(Lock& lock, bool only_if_full);
    // With the queue's lock: hands m_filling over if it holds anything, then waits for room and enqueues `batch`.
    void enqueue_after_filling(Lock& lock, Batch batch);
    bool filling_is_full() const noexcept;

    Database& m_db;
    std::size_t m_batch_rows;
    // Guarded by the queue's lock.
    Batch m_filling;
    std::uint64_t m_rows_written = 0;
    bool m_closed = false;
    // Prepared once, then used only by the queue's thread.
    std::unique_ptr<PacketInserter> m_inserter;
    Statement m_count_point;
    Statement m_advance_spool;
    WorkerQueue<Batch> m_queue;  // last: its thread starts once everything above is constructed
};

}  // namespace hoptrace::store
