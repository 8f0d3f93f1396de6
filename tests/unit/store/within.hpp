#pragma once
// Runs a test body on its own thread; a hang (the bug the threaded store tests look for) aborts the test binary
// instead of blocking ctest forever.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>
#include <utility>

namespace hoptrace::test {

template <typename Body>
void within(std::chrono::seconds limit, Body body) {
    std::packaged_task<void()> task(std::move(body));
    std::future<void> done = task.get_future();
    std::thread thread(std::move(task));
    if (done.wait_for(limit) == std::future_status::timeout) {
        std::fprintf(stderr, "test body still running after %llds: deadlock\n", static_cast<long long>(limit.count()));
        std::abort();
    }
    thread.join();
    done.get();
}

}  // namespace hoptrace::test
