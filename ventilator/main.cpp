// ventilator: hands tasks to workers, tracks every lease, reissues what dead workers held.
#include <zmq.hpp>

#include <iostream>
#include <random>

#include "taskvent/cli.hpp"
#include "taskvent/log.hpp"
#include "taskvent/signals.hpp"
#include "taskvent/ventilator/server.hpp"

int main(int argc, char** argv) {
    using namespace taskvent;
    ventilator::server_config cfg;
    log::options log_opts;
    std::uint32_t heartbeat_interval_ms = 1000;
    std::uint32_t confirm_timeout_ms = 10000;
    std::uint32_t backoff_base_ms = 100;
    std::uint32_t backoff_max_ms = 10000;

    CLI::App app{"taskvent ventilator: hands tasks to workers and reissues what dead workers held"};
    cli::add(app, "workers-bind", cfg.workers_bind, "endpoint workers connect to");
    cli::add(app, "control-bind", cfg.control_bind, "endpoint for submit, status and the sink");
    cli::add(app, "heartbeat-interval-ms", heartbeat_interval_ms, "heartbeat period")
        ->check(CLI::Range(10u, 600000u));
    cli::add(app,
             "heartbeat-liveness",
             cfg.heartbeat_liveness,
             "missed heartbeats before a worker is dead")
        ->check(CLI::Range(1u, 100u));
    cli::add(app, "max-attempts", cfg.table.max_attempts, "deliveries before a task is dead")
        ->check(CLI::Range(1u, 1000u));
    cli::add(app,
             "confirm-timeout-ms",
             confirm_timeout_ms,
             "wait for the sink's confirmation before reissuing")
        ->check(CLI::Range(100u, 3600000u));
    cli::add(
        app, "backoff-base-ms", backoff_base_ms, "first retry delay after a retryable failure");
    cli::add(app, "backoff-max-ms", backoff_max_ms, "longest retry delay");
    cli::add(app, "batch-size", cfg.table.batch_size, "most tasks in one message to a worker")
        ->check(CLI::Range(1u, 65536u));
    cli::add(app, "tasks", cfg.tasks_file, "JSON-lines file of tasks to load at start")
        ->check(CLI::ExistingFile);
    cli::add(app,
             "journal",
             cfg.journal_path,
             "append-only journal; a restart re-queues what is not done");
    cli::add(app,
             "journal-compact-bytes",
             cfg.journal_compact_bytes,
             "compact no journal smaller than this");
    cli::add(app, "ready-file", cfg.ready_file, "write bound endpoints here as JSON once bound");
    cli::add(app, "metrics-port", cfg.metrics_port, "Prometheus /metrics port, 0 for none");
    cli::add_log_options(app, log_opts);
    CLI11_PARSE(app, argc, argv);

    cfg.heartbeat_interval = std::chrono::milliseconds(heartbeat_interval_ms);
    cfg.table.confirm_timeout = std::chrono::milliseconds(confirm_timeout_ms);
    cfg.table.backoff_base = std::chrono::milliseconds(backoff_base_ms);
    cfg.table.backoff_max = std::chrono::milliseconds(backoff_max_ms);
    // A fresh epoch per start keeps new ids apart from any the sink recorded before.
    std::random_device rd;
    cfg.table.epoch = 1 + rd() % ((1U << 24) - 1);

    try {
        log::setup(log_opts);
    } catch (const std::exception& e) {
        std::cerr << "ventilator: " << e.what() << '\n';
        return 2;
    }
    auto logger = log::get("ventilator");
    logger->info(
        "config workers_bind={} control_bind={} heartbeat_interval_ms={} heartbeat_liveness={} "
        "max_attempts={} confirm_timeout_ms={} backoff_base_ms={} backoff_max_ms={} batch_size={} "
        "tasks={} journal={} metrics_port={}",
        cfg.workers_bind,
        cfg.control_bind,
        heartbeat_interval_ms,
        cfg.heartbeat_liveness,
        cfg.table.max_attempts,
        confirm_timeout_ms,
        backoff_base_ms,
        backoff_max_ms,
        cfg.table.batch_size,
        cfg.tasks_file.empty() ? "-" : cfg.tasks_file,
        cfg.journal_path.empty() ? "-" : cfg.journal_path,
        cfg.metrics_port);

    signals::install();
    try {
        zmq::context_t ctx(1);
        ventilator::server srv(cfg, ctx);
        return srv.run();
    } catch (const std::exception& e) {
        logger->critical("cannot start: {}", e.what());
        return 2;
    }
}
