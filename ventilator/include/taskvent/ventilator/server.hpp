// The ventilator process: binds the workers and control sockets, feeds the task table
// from them and carries out what the table decides. Single-threaded: one event loop owns
// the sockets and the table; the metrics thread only reads published atomics.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "taskvent/clock.hpp"
#include "taskvent/log.hpp"
#include "taskvent/metrics.hpp"
#include "taskvent/transport.hpp"
#include "taskvent/ventilator/journal.hpp"
#include "taskvent/ventilator/liveness.hpp"
#include "taskvent/ventilator/task_table.hpp"

namespace taskvent::ventilator {

struct server_config {
    std::string workers_bind = "tcp://*:5555";
    std::string control_bind = "tcp://*:5557";
    std::chrono::milliseconds heartbeat_interval{1000};
    std::uint32_t heartbeat_liveness = 3;
    table_config table;
    std::string tasks_file;    ///< JSON lines loaded at start; empty for none
    std::string journal_path;  ///< empty: in memory only, a crash loses every task
    std::uint64_t journal_compact_bytes = 64ULL << 20;  ///< never compact a smaller journal
    std::string ready_file;
    std::uint16_t metrics_port = 0;
};

class server {
  public:
    /// Binds both sockets and loads the tasks file. Throws on a bind failure or a bad
    /// tasks file (with the line number), which main turns into a one-line error.
    server(server_config cfg, zmq::context_t& ctx);
    ~server();

    /// Serves until SIGTERM/SIGINT or request_stop(). Returns the exit code.
    int run();
    void request_stop() noexcept { stop_.store(true); }

    const std::string& workers_endpoint() const noexcept { return workers_endpoint_; }
    const std::string& control_endpoint() const noexcept { return control_endpoint_; }

  private:
    struct worker_link {
        std::string routing_id;
        time_point last_sent;
    };

    void load_tasks_file();
    void open_journal();
    void commit_journal();
    void maybe_compact();
    void on_worker_message(transport::incoming& in);
    void on_control_message(transport::incoming& in);
    void on_hello(const std::string& routing_id, const protocol::hello& m);
    void on_submit(const std::string& routing_id, protocol::submit& m);
    void declare_dead(worker_id w);
    void forget_worker(worker_id w);
    void dispatch();
    void send_records();
    void send_heartbeats();
    void publish_metrics();
    void log_malformed(std::string_view socket, const std::string& peer, std::error_code ec);
    std::string status_json(std::uint64_t session);
    std::chrono::milliseconds poll_timeout() const;

    replay_result replayed_;  ///< first: the epoch it holds decides the table's
    server_config cfg_;
    steady_clock_source clock_;
    std::shared_ptr<spdlog::logger> log_;
    zmq::socket_t workers_;
    zmq::socket_t control_;
    std::string workers_endpoint_;
    std::string control_endpoint_;

    task_table table_;
    liveness_tracker liveness_;
    std::unique_ptr<journal> journal_;
    std::vector<std::pair<std::string, protocol::submit_ack>> pending_acks_;  ///< await commit
    time_point last_commit_{};
    std::uint64_t compact_at_bytes_ = 0;
    std::uint64_t journal_errors_ = 0;
    std::uint64_t compactions_ = 0;
    std::unordered_map<std::string, worker_id> by_routing_id_;
    std::unordered_map<std::uint32_t, worker_link> links_;

    std::string sink_routing_id_;
    time_point sink_last_seen_{};

    std::atomic<bool> stop_{false};
    time_point started_at_;
    log::rate_limiter malformed_log_;
    log::rate_limiter unknown_log_;
    std::uint64_t malformed_ = 0;
    std::uint64_t unknown_peers_ = 0;
    std::uint64_t unroutable_ = 0;

    // Rate estimate for status: confirmed count sampled about once a second.
    time_point rate_sample_at_{};
    std::uint64_t rate_sample_done_ = 0;
    double done_per_s_ = 0;

    std::string header_buf_;
    std::string body_buf_;

    metrics::registry metrics_;
    struct published;
    std::unique_ptr<published> published_;
    std::unique_ptr<metrics::http_server> metrics_server_;
};

}  // namespace taskvent::ventilator
