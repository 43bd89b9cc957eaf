// The client side of taskvent: reading task lines, submitting them in acknowledged
// batches, asking the ventilator for its status, and checking a results file against the
// tasks that were meant to produce it. The `taskvent` program is a thin shell over this.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "taskvent/protocol.hpp"
#include "taskvent/task_lines.hpp"

namespace taskvent::client {

using taskvent::input_error;

/// Reads every task line before anything is sent, so a bad line means nothing was
/// submitted (see read_task_lines). Throws input_error.
std::vector<protocol::submit_item> read_tasks(std::istream& in,
                                              const std::string& source,
                                              bool plain_lines);

struct submit_options {
    std::string control = "tcp://127.0.0.1:5557";
    std::size_t batch_size = 1000;
    std::size_t window = 8;                       ///< batches in flight before waiting for acks
    std::chrono::milliseconds ack_timeout{5000};  ///< per attempt of one batch
    /// Resends of an unacknowledged batch (ventilator restarting) before giving up. Lines
    /// with a key are safe to resend; lines without one may then be accepted twice.
    std::uint32_t retries = 12;
    /// Tasks per second to submit at (0: as fast as acknowledged). For latency figures at
    /// a known load; batches are sent on schedule, so keep them small at low rates.
    double rate = 0;
};

struct submit_outcome {
    std::uint64_t session = 0;
    std::uint64_t accepted = 0;    ///< new tasks queued
    std::uint64_t duplicates = 0;  ///< lines whose key was already accepted
    std::uint64_t acknowledged_lines = 0;
    std::uint64_t resent_batches = 0;
    std::uint64_t resent_unkeyed = 0;  ///< lines without a key in resent batches
    std::string error;                 ///< empty on success
    bool ok() const { return error.empty(); }
};

/// Sends the tasks in batches and waits for every acknowledgement, resending a batch that
/// is not acknowledged within the ack timeout (up to `retries` times). Fails, saying how
/// many lines were acknowledged, when a batch runs out of retries.
submit_outcome submit_tasks(zmq::context_t& ctx,
                            const submit_options& opts,
                            std::vector<protocol::submit_item> items);

/// Asks for the ventilator's status JSON. Empty when it did not answer in time.
std::optional<std::string> fetch_status(zmq::context_t& ctx,
                                        const std::string& control,
                                        std::uint64_t session,
                                        std::chrono::milliseconds timeout);

/// Renders the status JSON for a person.
std::string format_status(const std::string& json);

/// Queue-checker figures for one results file against the tasks meant to produce it.
struct check_report {
    std::uint64_t tasks = 0;
    std::uint64_t records = 0;
    std::uint64_t lost = 0;        ///< tasks with no record
    std::uint64_t unexpected = 0;  ///< records that match no task
    std::uint64_t duplicated = 0;  ///< records beyond the first for one task
    std::uint64_t malformed = 0;   ///< result lines that do not parse
    std::uint64_t ok = 0, failed = 0, dead = 0;
    bool passed() const {
        return lost == 0 && unexpected == 0 && duplicated == 0 && malformed == 0;
    }
    std::string summary() const;
};

/// Matches records to tasks by key when the tasks have keys, by count otherwise; a task
/// id recorded twice is a duplicate either way. Throws input_error on unreadable tasks.
check_report check_results(std::istream& tasks,
                           const std::string& tasks_source,
                           std::istream& results);

}  // namespace taskvent::client
