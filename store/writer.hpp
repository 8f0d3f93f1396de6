#pragma once
// The packet writer: producers (import, the spool's ingest) hand PacketRecords plus their raw bytes to add()
// or add_rows(). A single writer thread inserts them into `packets` in batched transactions. Memory is bounded:
// producers block while k_max_pending_batches batches wait for the writer.

#include "store/database.hpp"
#include "tracer/packet.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
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

    // The most full batches that ever waited for the writer thread at once (never above k_max_pending_batches).
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
    void run() noexcept;
    void write_batch(const Batch& batch);
    // With m_mutex held: wait until a batch may be enqueued (or the writer failed), then enqueue m_filling if it
    // holds rows (and, with only_if_full, is still full: another producer may have handed it over meanwhile).
    void enqueue_filling(std::unique_lock<std::mutex>& lock, bool only_if_full);
    // With m_mutex held: hands m_filling over if it holds anything, then waits for room and enqueues `batch`.
    void enqueue_after_filling(std::unique_lock<std::mutex>& lock, Batch batch);
    bool filling_is_full() const noexcept;

    Database& m_db;
    std::size_t m_batch_rows;
    mutable std::mutex m_mutex;
    std::condition_variable m_cv_work;   // writer waits for batches
    std::condition_variable m_cv_space;  // producers wait for room / flush completion
    Batch m_filling;
    std::deque<Batch> m_pending;
    std::uint64_t m_enqueued_batches = 0;
    std::uint64_t m_written_batches = 0;
    std::uint64_t m_rows_written = 0;
    bool m_stop = false;
    bool m_closed = false;
    std::exception_ptr m_error;
    std::size_t m_peak_pending = 0;
    // Prepared once, then used only by the writer thread.
    std::unique_ptr<PacketInserter> m_inserter;
    Statement m_count_point;
    Statement m_advance_spool;
    std::thread m_thread;
};

}  // namespace hoptrace::store
