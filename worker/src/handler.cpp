#include "taskvent/worker/handler.hpp"

#include <thread>

namespace taskvent::worker {

void cancel_source::cancel() noexcept {
    {
        // Set under the mutex so that a waiter between its check and its wait cannot miss it.
        std::lock_guard lock(mutex_);
        cancelled_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
}

bool cancel_source::wait_for(std::chrono::nanoseconds timeout) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return cancelled(); });
}

bool task_context::wait_cancelled(std::chrono::nanoseconds timeout) const {
    if (cancel == nullptr) {
        std::this_thread::sleep_for(timeout);
        return false;
    }
    return cancel->wait_for(timeout);
}

}  // namespace taskvent::worker
