// What a task handler sees and returns. This is the C++ API a program links against to run
// its own code as a taskvent worker: write a function from task_context to handler_result
// and hand it to taskvent::worker::worker (see worker/README.md).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "taskvent/ids.hpp"

namespace taskvent::worker {

/// The cancellation flag of one task. The worker's I/O thread raises it when the task runs
/// past its deadline or the drain grace period ends; the handler thread reads it. Waiting
/// on it (rather than sleeping) lets a handler wake up the moment it is cancelled.
class cancel_source {
  public:
    void cancel() noexcept;
    bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }

    /// Blocks for up to `timeout` or until cancelled. Returns true if cancelled.
    bool wait_for(std::chrono::nanoseconds timeout) const;

  private:
    std::atomic<bool> cancelled_{false};
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
};

/// One task as a handler sees it. The views stay valid for the duration of the handler
/// call only; copy what must outlive it. Handlers run on the worker's handler threads,
/// several at once when concurrency > 1, so a handler must be safe to call concurrently.
/// A plain aggregate so that a program can unit-test its own handler:
///   handle(task_context{.id = task_id{1}, .attempt = 1, .payload = "x"}).
struct task_context {
    using clock = std::chrono::steady_clock;

    task_id id;
    /// Delivery count: 1 on the first run, higher when the task is retried.
    std::uint32_t attempt = 0;
    /// The idempotency key given at submission, empty when none was.
    std::string_view key;
    std::string_view payload;
    /// When the worker gives up on this task (--task-timeout-ms); time_point::max() if never.
    clock::time_point deadline = clock::time_point::max();
    /// Raised by the worker; null means "never cancelled".
    const cancel_source* cancel = nullptr;

    /// True once the worker no longer wants the outcome: stop as soon as convenient.
    bool cancelled() const noexcept { return cancel != nullptr && cancel->cancelled(); }

    /// Sleeps for up to `timeout`, waking early on cancellation. Returns true if cancelled.
    bool wait_cancelled(std::chrono::nanoseconds timeout) const;
};

/// A handler's verdict on one task.
///   ok(output)     -> the sink records status "ok" with `output` as the result.
///   failed(reason) -> final: the sink records status "failed"; the task is not retried.
///   retry(reason)  -> the ventilator runs the task again (after a backoff) until it has
///                     used up its attempts, then records it as "dead" with the reason.
class handler_result {
  public:
    enum class kind : std::uint8_t { ok, failed, retry };

    static handler_result ok(std::string output) { return {kind::ok, std::move(output)}; }
    static handler_result failed(std::string reason) { return {kind::failed, std::move(reason)}; }
    static handler_result retry(std::string reason) { return {kind::retry, std::move(reason)}; }

    kind outcome() const noexcept { return kind_; }
    /// The output for ok, the reason otherwise.
    const std::string& text() const& noexcept { return text_; }
    std::string&& text() && noexcept { return std::move(text_); }

  private:
    handler_result(kind k, std::string text) : kind_(k), text_(std::move(text)) {}

    kind kind_;
    std::string text_;
};

/// A task handler. An exception escaping it is turned into retry(what()).
using handler = std::function<handler_result(const task_context&)>;

}  // namespace taskvent::worker
