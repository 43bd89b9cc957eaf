// The sink process: receives final results (from workers over PULL, dead records from the
// ventilator over the control DEALER), makes them durable through result_log, and confirms
// each id back to the ventilator only once its line is fsynced. One thread runs the loop;
// stop() is the only call meant for other threads.
//
//   worker --results--> [PULL]                      [DEALER] <--results(dead)-- ventilator
//                          \                          /   ^
//                           drain -> append + fdatasync   |  sink_hello every 1 s
//                                        \______________ confirm{new + duplicate ids}
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "taskvent/log.hpp"
#include "taskvent/metrics.hpp"
#include "taskvent/protocol.hpp"
#include "taskvent/sink/result_log.hpp"
#include "taskvent/transport.hpp"

namespace taskvent::sink {

struct server_config {
    std::string results_bind = "tcp://*:5556";
    std::string control = "tcp://127.0.0.1:5557";  ///< the ventilator's control ROUTER
    std::string output = "results.jsonl";
    std::uint64_t expect = 0;        ///< exit once this many distinct tasks are recorded; 0: never
    std::string stats_file;          ///< JSON counts written at exit; empty: none
    std::string ready_file;          ///< {"results": endpoint} written once bound; empty: none
    std::uint16_t metrics_port = 0;  ///< 0: no metrics HTTP server
    std::string name = "sink";       ///< sent in sink_hello, for the ventilator's logs
    std::chrono::milliseconds hello_interval{1000};
    /// Bounds how late a signal or a due hello is noticed; input wakes the loop at once.
    std::chrono::milliseconds poll_timeout{100};
    /// How long closing waits for the last confirm to leave: without it, an --expect run
    /// would exit with the final confirm still queued and the ventilator would reissue.
    std::chrono::milliseconds close_linger{2000};
};

/// Counts written to the stats file: file-wide for recorded and the statuses, this run's
/// for the rest.
struct sink_stats {
    std::uint64_t recorded = 0;
    std::uint64_t duplicates = 0;
    std::uint64_t ok = 0;
    std::uint64_t failed = 0;
    std::uint64_t dead = 0;
    std::uint64_t malformed = 0;
    std::uint64_t write_errors = 0;
};

class server {
  public:
    /// Opens and recovers the output, binds, connects, starts metrics, writes the ready
    /// file. Throws (std::system_error, zmq::error_t, ...) when any of that fails.
    explicit server(server_config cfg);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Serves until --expect is met, a SIGTERM/SIGINT arrives or stop() is called; then
    /// flushes, confirms, writes the stats file and closes. Returns the exit code: 0, or 1
    /// when results received could not be written before exit. Call once.
    int run();

    /// Asks run() to finish; safe from any thread.
    void stop() noexcept { stop_requested_.store(true, std::memory_order_relaxed); }

    /// The endpoint the results PULL socket is bound to, port filled in.
    const std::string& results_endpoint() const noexcept { return results_endpoint_; }

    /// Call from the loop thread or after run() returned.
    sink_stats stats() const;

    const metrics::registry& metrics() const noexcept { return registry_; }

  private:
    enum class from { results, control };

    bool done() const;
    /// Runs one step of the loop; what it throws is logged and counted, never escapes.
    void guarded(void (server::*step)());
    void turn();
    void flush();
    void send_hello_if_due();
    void wait_for_input();
    void drain();
    void take(transport::incoming in, from socket);
    void commit();
    void confirm(const std::vector<task_id>& ids);
    void note_malformed(from socket, std::string_view what);
    void note_write_error(std::error_code ec);
    void note_loop_error(std::string_view what);
    bool finish();
    void write_stats_file() const;

    server_config cfg_;
    std::shared_ptr<spdlog::logger> log_;
    metrics::registry registry_;
    metrics::counter& results_total_;
    metrics::counter& duplicates_total_;
    metrics::counter& malformed_total_;
    metrics::counter& write_errors_total_;
    metrics::counter& confirms_dropped_total_;
    metrics::histogram& fsync_ms_;
    result_log output_;
    zmq::context_t ctx_;
    zmq::socket_t results_;  ///< PULL, bound: workers push results here
    zmq::socket_t control_;  ///< DEALER, connected to the ventilator's control ROUTER
    std::string results_endpoint_;
    std::unique_ptr<metrics::http_server> http_;

    /// Received, not yet durable. Kept across turns only when a write failed: the retry
    /// appends them again, and draining stops while they pile up (backpressure, no loss).
    std::vector<protocol::result_item> pending_;
    std::chrono::steady_clock::time_point next_hello_{};
    std::atomic<bool> stop_requested_{false};
    log::rate_limiter malformed_limiter_;
    log::rate_limiter write_error_limiter_;
    log::rate_limiter peer_error_limiter_;
    log::rate_limiter confirm_limiter_;
    log::rate_limiter loop_error_limiter_;
    std::uint64_t duplicates_ = 0;
    std::uint64_t malformed_ = 0;
    std::uint64_t write_errors_ = 0;
};

}  // namespace taskvent::sink
