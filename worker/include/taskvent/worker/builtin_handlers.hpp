// The handlers that ship with the worker: echo, sleep, sha256 (CPU work for benchmarks)
// and exec (run a command per task). Each is an ordinary taskvent::worker::handler, so a
// program can also use them as building blocks for its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "taskvent/worker/config.hpp"
#include "taskvent/worker/handler.hpp"

namespace taskvent::worker {

/// Returns the payload as the result.
handler make_echo_handler();

/// Sleeps for the payload's value in milliseconds when the payload is a non-negative
/// integer, else for `fallback`; returns the payload. Wakes early (retry "cancelled") when
/// the task is cancelled.
handler make_sleep_handler(std::chrono::milliseconds fallback);

/// Hashes the payload with SHA-256, then the 32-byte digest `rounds - 1` more times;
/// the result is the last digest in lowercase hex. Throws std::invalid_argument if
/// rounds is 0.
handler make_sha256_handler(std::uint32_t rounds);

struct exec_options {
    std::string command;  ///< run as /bin/sh -c command, in a process group of its own
    std::chrono::milliseconds timeout{30000};
    /// stdout beyond this is not kept and makes the task fail (a truncated result would
    /// look like a good one).
    std::size_t max_output_bytes = 16 * 1024 * 1024;
    /// The failure reason carries this much of the end of stderr.
    std::size_t stderr_tail_bytes = 2048;
};

/// Runs the command per task with the payload on stdin and TASKVENT_TASK_ID,
/// TASKVENT_TASK_ATTEMPT and TASKVENT_TASK_KEY in its environment.
///   exit 0 -> ok(stdout); exit 75 (EX_TEMPFAIL) or killed by a signal -> retry;
///   any other exit -> failed(stderr tail); time limit (the sooner of `timeout` and the
///   task deadline) or cancellation -> SIGKILL to the whole process group, retry.
/// Whatever the command leaves running in its process group when it exits is killed too.
/// Throws std::invalid_argument if the command is empty.
handler make_exec_handler(exec_options opts);

/// The names make_builtin_handler accepts.
const std::vector<std::string_view>& builtin_handler_names();

/// Picks the built-in handler cfg.handler names, configured from cfg. Throws
/// std::invalid_argument naming the valid handlers when the name is unknown, or naming
/// the flag when the handler's settings are unusable.
handler make_builtin_handler(const worker_config& cfg);

}  // namespace taskvent::worker
