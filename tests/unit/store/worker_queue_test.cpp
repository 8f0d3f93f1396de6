#include "store/worker_queue.hpp"

#include <gtest/gtest.h>

#include "within.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hoptrace::store {
namespace {

using namespace std::chrono_literals;
using test::within;
using Queue = WorkerQueue<int>;

// Holds the queue's thread inside process() until opened.
class Gate {
public:
    void wait() {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [this] { return m_open; });
    }
    void open() {
        const std::lock_guard lock(m_mutex);
        m_open = true;
        m_cv.notify_all();
    }

private:
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_open = false;
};

void push(Queue& queue, int item) {
    Queue::Lock lock = queue.lock();
    queue.push(lock, std::move(item));
}

TEST(WorkerQueue, close_processes_everything_pushed_in_order) {
    within(30s, [] {
        std::vector<int> processed;  // only the queue's thread touches it until close() joined it
        int done = 0;                // guarded by the queue's lock
        Queue queue(
            4, {.process = [&](int& item) { processed.push_back(item); }, .done = [&](int&) { ++done; }, .lost = {}});
        for (int i = 0; i < 1000; ++i) {
            push(queue, i);
        }
        queue.close();
        ASSERT_EQ(processed.size(), 1000U);
        for (int i = 0; i < 1000; ++i) {
            EXPECT_EQ(processed[static_cast<std::size_t>(i)], i);
        }
        EXPECT_EQ(done, 1000);
        EXPECT_LE(queue.peak(queue.lock()), 4U);
        queue.close();  // idempotent
    });
}

TEST(WorkerQueue, a_full_queue_blocks_the_producer_until_an_item_is_done) {
    within(30s, [] {
        Gate gate;
        Queue queue(2, {.process = [&](int&) { gate.wait(); }, .done = {}, .lost = {}});
        push(queue, 1);  // being processed (held at the gate): it still counts
        push(queue, 2);
        std::atomic<bool> pushed{false};
        std::thread producer([&] {
            push(queue, 3);
            pushed = true;
        });
        std::this_thread::sleep_for(200ms);
        EXPECT_FALSE(pushed.load()) << "two items in the queue's hands: the third waits";
        EXPECT_EQ(queue.peak(queue.lock()), 2U);
        gate.open();
        producer.join();
        EXPECT_TRUE(pushed.load());
        queue.close();
        EXPECT_EQ(queue.peak(queue.lock()), 2U);
    });
}

TEST(WorkerQueue, drain_waits_until_everything_pushed_before_is_done) {
    within(30s, [] {
        std::atomic<int> processed{0};
        Queue queue(3, {.process =
                            [&](int&) {
                                std::this_thread::sleep_for(2ms);
                                ++processed;
                            },
                        .done = {},
                        .lost = {}});
        for (int i = 0; i < 20; ++i) {
            push(queue, i);
        }
        Queue::Lock lock = queue.lock();
        queue.drain(lock);
        EXPECT_EQ(processed.load(), 20);
        queue.drain(lock);  // nothing pushed since: returns at once
    });
}

TEST(WorkerQueue, the_first_exception_of_the_work_reaches_the_owner) {
    within(30s, [] {
        Gate gate;
        std::vector<int> lost;  // guarded by the queue's lock
        Queue queue(8, {.process =
                            [&](int& item) {
                                gate.wait();
                                if (item == 3) {
                                    throw std::runtime_error("item 3 failed");
                                }
                            },
                        .done = {},
                        .lost = [&](int& item) { lost.push_back(item); }});
        for (int i = 1; i <= 6; ++i) {
            push(queue, i);
        }
        gate.open();
        {
            Queue::Lock lock = queue.lock();
            try {
                queue.drain(lock);
                ADD_FAILURE() << "drain() returned after a failure";
            } catch (const std::runtime_error& e) {
                EXPECT_STREQ(e.what(), "item 3 failed");
            }
            EXPECT_EQ(lost, (std::vector<int>{3, 4, 5, 6})) << "the failed item first, then those not begun";
            EXPECT_THROW(queue.throw_if_failed(lock), std::runtime_error);
            EXPECT_THROW(queue.wait_for_room(lock), std::runtime_error);
            int item = 7;
            EXPECT_THROW(queue.push(lock, std::move(item)), std::runtime_error);
        }
        EXPECT_THROW(queue.close(), std::runtime_error);
        EXPECT_THROW(queue.close(), std::runtime_error) << "every close() tells";
    });
}

TEST(WorkerQueue, a_failure_wakes_a_producer_waiting_for_room) {
    within(30s, [] {
        Gate gate;
        Queue queue(1, {.process =
                            [&](int&) {
                                gate.wait();
                                throw std::runtime_error("disk full");
                            },
                        .done = {},
                        .lost = {}});
        push(queue, 1);
        std::atomic<bool> threw{false};
        std::thread producer([&] {
            try {
                push(queue, 2);
            } catch (const std::runtime_error&) {
                threw = true;
            }
        });
        std::this_thread::sleep_for(100ms);
        gate.open();
        producer.join();
        EXPECT_TRUE(threw.load());
        EXPECT_THROW(queue.close(), std::runtime_error);
    });
}

// The queue's thread drops every capability before its first item (the spool and writer threads of a capture that
// runs as root must hold none: e2e.least_privilege reads them all).
TEST(WorkerQueue, its_thread_holds_no_capabilities) {
    std::string effective;
    std::string permitted;
    Queue queue(1, {.process =
                        [&](int&) {
                            std::ifstream status("/proc/thread-self/status");
                            for (std::string line; std::getline(status, line);) {
                                if (line.starts_with("CapEff:")) {
                                    effective = line.substr(7);
                                } else if (line.starts_with("CapPrm:")) {
                                    permitted = line.substr(7);
                                }
                            }
                        },
                    .done = {},
                    .lost = {}});
    push(queue, 0);
    queue.close();
    EXPECT_EQ(effective, "\t0000000000000000");
    EXPECT_EQ(permitted, "\t0000000000000000");
}

}  // namespace
}  // namespace hoptrace::store
