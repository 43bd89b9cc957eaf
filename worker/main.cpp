// The worker program: flags (each also a TASKVENT_ environment variable) into a
// worker_config, one log line with the effective config, then the worker until SIGTERM
// or SIGINT, after which it drains and exits 0. Bad flags exit 2 with one line on stderr.
#include <cstdint>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "taskvent/cli.hpp"
#include "taskvent/log.hpp"
#include "taskvent/signals.hpp"
#include "taskvent/worker/builtin_handlers.hpp"
#include "taskvent/worker/worker.hpp"

namespace {

namespace tw = taskvent::worker;
using std::chrono::milliseconds;

constexpr int exit_usage = 2;

std::string quote_for_log(const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out + '"';
}

}  // namespace

int main(int argc, char** argv) {
    tw::worker_config cfg;
    taskvent::log::options log_opts;
    // Flags carry their unit in their name; the config holds std::chrono durations.
    std::int64_t sleep_ms = cfg.sleep.count();
    std::int64_t exec_timeout_ms = cfg.exec_timeout.count();
    std::int64_t task_timeout_ms = cfg.task_timeout.count();
    std::int64_t drain_timeout_ms = cfg.drain_timeout.count();
    std::int64_t reconnect_min_ms = cfg.reconnect_min.count();
    std::int64_t reconnect_max_ms = cfg.reconnect_max.count();

    CLI::App app{"taskvent worker: runs tasks from the ventilator and pushes results to the sink"};
    namespace cli = taskvent::cli;
    cli::add(app, "ventilator", cfg.ventilator, "Ventilator endpoint for workers (connect)");
    cli::add(app, "sink", cfg.sink, "Sink results endpoint (connect)");
    cli::add(app, "concurrency", cfg.concurrency, "Tasks run at once (handler threads)");
    cli::add(app, "prefetch", cfg.prefetch, "Tasks queued locally beyond those running");
    cli::add(app,
             "prefetch-max",
             cfg.prefetch_max,
             "Prefetch grown to while tasks are short (~2 ms of work queued); <= prefetch: fixed");
    cli::add(app, "handler", cfg.handler, "Built-in handler: echo, sleep, sha256 or exec");
    cli::add(app, "sleep-ms", sleep_ms, "sleep: duration when the payload is not an integer")
        ->check(CLI::NonNegativeNumber);
    cli::add(app, "sha256-rounds", cfg.sha256_rounds, "sha256: hashing rounds per task");
    cli::add(app, "exec-command", cfg.exec_command, "exec: command run with /bin/sh -c");
    cli::add(app, "exec-timeout-ms", exec_timeout_ms, "exec: time limit per run, 0 = none")
        ->check(CLI::NonNegativeNumber);
    cli::add(app, "task-timeout-ms", task_timeout_ms, "Per-task deadline, 0 = off")
        ->check(CLI::NonNegativeNumber);
    cli::add(app, "drain-timeout-ms", drain_timeout_ms, "Grace for running tasks on SIGTERM")
        ->check(CLI::NonNegativeNumber);
    cli::add(app, "reconnect-min-ms", reconnect_min_ms, "First delay before registering again")
        ->check(CLI::PositiveNumber);
    cli::add(app, "reconnect-max-ms", reconnect_max_ms, "Largest delay before registering again")
        ->check(CLI::PositiveNumber);
    cli::add(app, "name", cfg.name, "Worker name in logs and results (default hostname-pid)");
    cli::add(app, "metrics-port", cfg.metrics_port, "Prometheus /metrics port, 0 = off");
    cli::add_log_options(app, log_opts);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
            return app.exit(e);  // --help
        }
        fmt::print(stderr, "worker: {}\n", e.what());
        return exit_usage;
    }

    cfg.sleep = milliseconds(sleep_ms);
    cfg.exec_timeout = milliseconds(exec_timeout_ms);
    cfg.task_timeout = milliseconds(task_timeout_ms);
    cfg.drain_timeout = milliseconds(drain_timeout_ms);
    cfg.reconnect_min = milliseconds(reconnect_min_ms);
    cfg.reconnect_max = milliseconds(reconnect_max_ms);
    if (cfg.name.empty()) {
        cfg.name = tw::default_worker_name();
    }

    tw::handler handler;
    try {
        taskvent::log::setup(log_opts);
        tw::validate(cfg);
        handler = tw::make_builtin_handler(cfg);
    } catch (const std::exception& e) {
        fmt::print(stderr, "worker: {}\n", e.what());
        return exit_usage;
    }

    taskvent::log::get("worker")->info(
        "config ventilator={} sink={} concurrency={} prefetch={} prefetch_max={} handler={} "
        "sleep_ms={} "
        "sha256_rounds={} exec_command={} exec_timeout_ms={} task_timeout_ms={} "
        "drain_timeout_ms={} reconnect_min_ms={} reconnect_max_ms={} name={} metrics_port={} "
        "log_level={} log_format={}",
        cfg.ventilator,
        cfg.sink,
        cfg.concurrency,
        cfg.prefetch,
        cfg.prefetch_max,
        cfg.handler,
        sleep_ms,
        cfg.sha256_rounds,
        quote_for_log(cfg.exec_command),
        exec_timeout_ms,
        task_timeout_ms,
        drain_timeout_ms,
        reconnect_min_ms,
        reconnect_max_ms,
        cfg.name,
        cfg.metrics_port,
        log_opts.level,
        log_opts.fmt == taskvent::log::format::json ? "json" : "text");

    taskvent::signals::install();
    tw::worker w(std::move(cfg), std::move(handler));
    return w.run();
}
