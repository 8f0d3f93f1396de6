#pragma once
// A bounded queue of items that one thread of its own works off in order: the capture spool's chunks
// (SpoolFile) and the writer's batches (Writer). Producers push under the queue's mutex and wait while
// `capacity` items are in the queue's hands (the one being worked on counts until its work is done), so memory
// stays bounded and a producer that outruns the disk or SQLite feels it. The first exception the work throws
// stops the thread; from then on every push, drain and close rethrows it to the owner.
//
// The mutex is the owner's too: lock() hands it out, and the owner's state that its producers and the queue's
// hooks share (a batch being filled, byte counts, recycled buffers) is guarded by it. Operations that take a
// `Lock&` need lock()'s lock held; they wait on it (releasing it meanwhile, like a condition variable).
//
// The thread drops every capability before its first item (tracer/privileges.hpp): it works on files and
// databases opened before, and a capture running as root must not keep privileges on threads that need none.

#include "tracer/privileges.hpp"

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace hoptrace::store {

template <class Item>
class WorkerQueue {
public:
    using Lock = std::unique_lock<std::mutex>;

    // What the thread does. Only `process` is required; `done` and `lost` must not throw.
    struct Work {
        // On the queue's thread, without the lock, one item at a time in push order.
        std::function<void(Item& item)> process;
        // Under the lock, right after process(item) returned: the owner's bookkeeping.
        std::function<void(Item& item)> done;
        // Under the lock, after process() threw, for each item that will never be processed, the one whose
        // processing failed first. They are destroyed afterwards.
        std::function<void(Item& item)> lost;
    };

    // Starts the thread. `capacity` is at least 1.
    WorkerQueue(std::size_t capacity, Work work)
        : m_capacity(std::max<std::size_t>(capacity, 1)), m_work(std::move(work)), m_thread([this] { run(); }) {}
    WorkerQueue(const WorkerQueue&) = delete;
    WorkerQueue& operator=(const WorkerQueue&) = delete;
    ~WorkerQueue() {
        try {
            close();
        } catch (...) {  // NOLINT(bugprone-empty-catch): the owner calls close() itself to see the failure
        }
    }

    [[nodiscard]] Lock lock() const { return Lock(m_mutex); }

    // Rethrows what process() threw, if it did.
    void throw_if_failed([[maybe_unused]] const Lock& lock) const {
        assert(holds(lock));
        if (m_failure != nullptr) {
            std::rethrow_exception(m_failure);
        }
    }

    // Waits until an item may be pushed; rethrows a failure (also one that happens while waiting).
    void wait_for_room(Lock& lock) {
        assert(holds(lock));
        m_progress.wait(lock, [this] { return m_items.size() < m_capacity || m_failure != nullptr; });
        throw_if_failed(lock);
    }

    // wait_for_room(), then appends `item` (left as it was when that throws).
    void push(Lock& lock, Item&& item) {
        wait_for_room(lock);
        if (m_stopping) {
            throw std::logic_error("an item pushed to a closed worker queue");
        }
        m_items.push_back(std::move(item));
        ++m_pushed;
        m_peak = std::max(m_peak, m_items.size());
        m_wake.notify_one();
    }

    // Waits until every item pushed so far is processed; rethrows a failure.
    void drain(Lock& lock) {
        assert(holds(lock));
        const std::uint64_t target = m_pushed;
        m_progress.wait(lock, [&] { return m_done >= target || m_failure != nullptr; });
        throw_if_failed(lock);
    }

    // Lets the thread process what is queued, then joins it; rethrows a failure. Idempotent. Call it without the
    // lock held.
    void close() {
        {
            const std::lock_guard guard(m_mutex);
            m_stopping = true;
            m_wake.notify_all();
        }
        if (m_thread.joinable()) {
            m_thread.join();
        }
        const std::lock_guard guard(m_mutex);
        if (m_failure != nullptr) {
            std::rethrow_exception(m_failure);
        }
    }

    // The most items that were ever in the queue's hands at once (never above the capacity).
    [[nodiscard]] std::size_t peak([[maybe_unused]] const Lock& lock) const {
        assert(holds(lock));
        return m_peak;
    }

private:
    [[nodiscard]] bool holds(const Lock& lock) const noexcept { return lock.owns_lock() && lock.mutex() == &m_mutex; }

    void run() noexcept {
        drop_all_capabilities();
        while (process_next()) {
        }
    }

    // Waits for the front item and processes it. False once closed with nothing left, or after a failure.
    bool process_next() noexcept {
        std::optional<Item> finished;  // destroyed after the lock is released: freeing a batch takes a while
        Lock lock(m_mutex);
        m_wake.wait(lock, [this] { return !m_items.empty() || m_stopping; });
        if (m_items.empty()) {
            return false;
        }
        // A deque keeps references to its elements valid while producers push behind them.
        Item& item = m_items.front();
        lock.unlock();
        std::exception_ptr failure;
        try {
            m_work.process(item);
        } catch (...) {
            failure = std::current_exception();
        }
        lock.lock();
        if (failure != nullptr) {
            m_failure = failure;
            if (m_work.lost) {
                std::for_each(m_items.begin(), m_items.end(), m_work.lost);
            }
            m_items.clear();
            m_progress.notify_all();  // producers waiting for room, drain() and close() see the failure
            return false;
        }
        if (m_work.done) {
            m_work.done(item);
        }
        finished.emplace(std::move(item));
        m_items.pop_front();
        ++m_done;
        m_progress.notify_all();
        return true;
    }

    const std::size_t m_capacity;
    const Work m_work;
    mutable std::mutex m_mutex;
    std::condition_variable m_wake;      // the thread waits for items (or close)
    std::condition_variable m_progress;  // producers wait for room, drain() for items done
    std::deque<Item> m_items;            // the front one is being processed
    std::uint64_t m_pushed = 0;
    std::uint64_t m_done = 0;
    std::size_t m_peak = 0;
    bool m_stopping = false;
    std::exception_ptr m_failure;
    std::thread m_thread;  // last: started once everything it uses is constructed
};

}  // namespace hoptrace::store
