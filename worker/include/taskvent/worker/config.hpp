// The worker's configuration: one field per command-line flag (worker/main.cpp maps
// --flag-name-ms to a std::chrono field here). Durations are std::chrono inside.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace taskvent::worker {

struct worker_config {
    std::string ventilator = "tcp://127.0.0.1:5555";  ///< --ventilator (DEALER connects)
    std::string sink = "tcp://127.0.0.1:5556";        ///< --sink (PUSH connects)
    std::uint32_t concurrency = 4;                    ///< handler threads, tasks run at once
    std::uint32_t prefetch = 32;                      ///< tasks queued locally beyond those running
    /// The prefetch grows up to this while tasks are short (about 2 ms of the slots' work
    /// queued); at or below `prefetch` it stays fixed at `prefetch`.
    std::uint32_t prefetch_max = 1024;

    std::string handler = "echo";         ///< built-in handler: echo, sleep, sha256, exec
    std::chrono::milliseconds sleep{10};  ///< sleep: when the payload is not an integer (ms)
    std::uint32_t sha256_rounds = 1000;
    std::string exec_command;  ///< exec: run with /bin/sh -c
    std::chrono::milliseconds exec_timeout{30000};

    /// Per-task deadline enforced by the I/O thread; zero turns it off.
    std::chrono::milliseconds task_timeout{0};
    /// How long running tasks may take to finish after SIGTERM before they are given up.
    std::chrono::milliseconds drain_timeout{25000};
    std::chrono::milliseconds reconnect_min{1000};
    std::chrono::milliseconds reconnect_max{32000};

    std::string name;                ///< empty: hostname-pid (see default_worker_name)
    std::uint16_t metrics_port = 0;  ///< 0: no metrics HTTP server
};

/// "hostname-pid", the name a worker uses when none is configured.
std::string default_worker_name();

/// Throws std::invalid_argument naming the first field that makes no sense (zero
/// concurrency, reconnect-min above reconnect-max, empty endpoint...). Handler-specific
/// fields are checked by make_builtin_handler.
void validate(const worker_config& cfg);

}  // namespace taskvent::worker
