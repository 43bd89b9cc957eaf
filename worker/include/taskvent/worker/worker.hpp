// The worker: registers with the ventilator, runs the tasks it is given on handler
// threads, pushes results to the sink, and drains cleanly on SIGTERM. Link
// taskvent::worker and construct one with your own handler to run your code as a worker.
#pragma once

#include <memory>

#include "taskvent/metrics.hpp"
#include "taskvent/worker/config.hpp"
#include "taskvent/worker/handler.hpp"

namespace taskvent::worker {

/// One worker process's engine. The thread that calls run() becomes the I/O thread: it
/// owns both sockets and the heartbeats, and never runs a handler, so no handler can make
/// the worker look dead. `concurrency` handler threads run the tasks.
///
/// Threads: run() once, from one thread; request_stop() and metrics() from any thread.
class worker {
  public:
    /// Throws std::invalid_argument when the configuration is unusable (see validate()).
    worker(worker_config cfg, handler h);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    /// Serves until SIGTERM/SIGINT (signals::received()) or request_stop(), then drains:
    /// hands back unstarted tasks, lets running ones finish within drain_timeout, flushes
    /// results and the last report, says bye. Returns the process exit code: 0 after a
    /// drain, 1 when the sockets could not be set up.
    int run();

    /// Asks run() to drain and return, as SIGTERM would. Safe from any thread, any time.
    void request_stop() noexcept;

    /// Counters and histograms (taskvent_worker_*), as served on --metrics-port.
    const metrics::registry& metrics() const noexcept;

    /// The configuration in effect (with the default name filled in).
    const worker_config& config() const noexcept;

  private:
    class impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace taskvent::worker
