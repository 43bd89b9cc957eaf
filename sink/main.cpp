// The sink program: flags -> config, log it once, run the server. Everything else lives in
// the taskvent::sink library so that tests drive it without this process.
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>

#include "taskvent/cli.hpp"
#include "taskvent/log.hpp"
#include "taskvent/signals.hpp"
#include "taskvent/sink/server.hpp"

namespace {

using taskvent::sink::server_config;

std::string default_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) {
        return "sink-" + std::to_string(::getpid());
    }
    return std::string(host) + "-" + std::to_string(::getpid());
}

void add_flags(CLI::App& app, server_config& cfg, taskvent::log::options& log_opts) {
    namespace cli = taskvent::cli;
    cli::add(app, "results-bind", cfg.results_bind, "endpoint the results PULL socket binds");
    cli::add(app, "control", cfg.control, "the ventilator's control endpoint");
    cli::add(app, "output", cfg.output, "results file, one JSON object per line (appended)");
    cli::add(
        app, "expect", cfg.expect, "exit 0 once this many distinct tasks are recorded; 0: never");
    cli::add(app, "stats-file", cfg.stats_file, "JSON counts written at exit");
    cli::add(app, "ready-file", cfg.ready_file, "JSON with the bound endpoint, written once bound");
    cli::add(app, "metrics-port", cfg.metrics_port, "Prometheus metrics HTTP port; 0: off");
    cli::add_log_options(app, log_opts);
}

void log_config(spdlog::logger& log,
                const server_config& cfg,
                const taskvent::log::options& log_opts) {
    log.info(
        "config results_bind={} control={} output={} expect={} stats_file={} ready_file={} "
        "metrics_port={} name={} log_level={} log_format={}",
        cfg.results_bind,
        cfg.control,
        cfg.output,
        cfg.expect,
        cfg.stats_file,
        cfg.ready_file,
        cfg.metrics_port,
        cfg.name,
        log_opts.level,
        log_opts.fmt == taskvent::log::format::json ? "json" : "text");
}

}  // namespace

int main(int argc, char** argv) {
    server_config cfg;
    cfg.name = default_name();
    taskvent::log::options log_opts;
    CLI::App app{"taskvent sink: records the first result of every task durably, confirms it"};
    add_flags(app, cfg, log_opts);
    try {
        app.parse(argc, argv);
        taskvent::log::setup(log_opts);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) {
            return app.exit(e);  // --help
        }
        std::cerr << "sink: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sink: " << e.what() << '\n';
        return 2;
    }

    const auto log = taskvent::log::get("sink");
    log_config(*log, cfg, log_opts);
    taskvent::signals::install();
    // A file-size limit then fails the write with EFBIG, handled like ENOSPC, instead of
    // killing the process with SIGXFSZ.
    std::signal(SIGXFSZ, SIG_IGN);

    std::unique_ptr<taskvent::sink::server> server;
    try {
        server = std::make_unique<taskvent::sink::server>(cfg);
    } catch (const std::exception& e) {
        log->critical("cannot start: {}", e.what());
        return 2;
    }
    try {
        return server->run();
    } catch (const std::exception& e) {
        log->critical("sink failed: {}", e.what());
        return 1;
    }
}
