// The handler threads of a worker and the two channels between them and the I/O thread:
// a queue of tasks going in, and a vector of events (started, finished) coming out,
// signalled through an eventfd that the I/O thread polls together with its sockets.
// Owned by the worker's I/O thread; every public member is called from that thread only
// (except wake(), which any thread may call).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "taskvent/protocol.hpp"
#include "taskvent/worker/handler.hpp"

namespace taskvent::worker::detail {

enum class run_phase : std::uint8_t { queued, running, completed, abandoned };

/// One delivery of a task, shared by the I/O thread and the handler thread running it.
/// `phase` settles the race between a handler finishing and the I/O thread giving up on
/// it: whichever moves it out of `running` first owns the outcome.
struct task_run {
    std::uint64_t seq = 0;  ///< the I/O thread's handle, unique within the process
    protocol::task_item item;
    cancel_source cancel;
    std::atomic<run_phase> phase{run_phase::queued};
};

struct pool_event {
    enum class kind : std::uint8_t { started, finished };

    kind what = kind::started;
    std::shared_ptr<task_run> run;
    std::chrono::steady_clock::time_point deadline{};  ///< started: when it times out
    std::chrono::nanoseconds elapsed{};                ///< finished: time in the handler
    std::optional<handler_result> result;              ///< finished: the verdict
};

class handler_pool {
  public:
    /// Creates the eventfd; no thread runs until start(). Throws std::system_error.
    handler_pool(handler h, std::chrono::milliseconds task_timeout);
    ~handler_pool();
    handler_pool(const handler_pool&) = delete;
    handler_pool& operator=(const handler_pool&) = delete;

    void start(std::size_t threads);

    /// Readable when events are waiting (or wake() was called).
    int event_fd() const noexcept;
    /// Makes event_fd() readable: lets another thread interrupt the I/O thread's poll.
    void wake() noexcept;

    /// Queues tasks for the handler threads, in order; `runs` is left empty.
    void push(std::vector<std::shared_ptr<task_run>>&& runs);
    /// Removes and returns every task no handler has picked up yet.
    std::vector<std::shared_ptr<task_run>> take_queued();
    /// Clears the eventfd and returns the events posted since the last call, in order.
    std::vector<pool_event> take_events();

    /// Gives up on a running task: cancels it and, if `replace`, starts a thread to take
    /// its place so that a stuck handler does not cost a slot. The stuck thread exits when
    /// its handler returns, discarding the outcome. False when the handler finished first
    /// (its finished event is then on its way).
    bool abandon(task_run& run, bool replace);

    /// When on (the default), a handler thread that has taken a task waits, before running
    /// it, until mark_reported() covers the task's started event, or `report_wait` passes:
    /// a task that kills the process is then known to the ventilator as running, and is
    /// charged for it, instead of passing for one only prefetched.
    void set_report_before_run(bool on) noexcept;
    /// Every started event take_events() has returned so far has left in a report (or
    /// has no one to go to); handler threads waiting on them run their tasks.
    void mark_reported();
    static constexpr std::chrono::milliseconds report_wait{200};

    /// Threads still inside a handler whose task was abandoned.
    std::size_t stuck() const noexcept;

    /// Stops the threads: idle ones at once; waits up to `grace` for the others, then
    /// detaches what is left (they hold the shared state, so they can finish safely).
    void stop(std::chrono::milliseconds grace);

  private:
    struct shared_state;
    struct thread_slot {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> finished;
    };

    void spawn();

    std::shared_ptr<shared_state> state_;
    std::vector<thread_slot> threads_;
};

}  // namespace taskvent::worker::detail
