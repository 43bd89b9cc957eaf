// A whole taskvent pipeline on loopback for process-level tests: one ventilator, one sink and
// N workers started from build/bin on tcp://127.0.0.1:* (endpoints read back from ready
// files), plus the workload, submit, status and results-checking helpers the tests share.
// The pipeline owns its processes: destroying it stops and reaps every one of them by pid.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace taskvent::testing {

/// A counter from a status or stats object; 0 when it is absent.
inline std::uint64_t count_of(const nlohmann::json& j, const char* key) {
    return j.value(key, std::uint64_t{0});
}

/// N keyed tasks written as JSON lines: {"key":"k<i>","payload":...}.
struct workload {
    std::filesystem::path path;
    std::vector<std::string> keys;  ///< in file order
};

/// Writes `count` tasks with keys k0..k<count-1>; `payload(i)` gives each payload
/// (default: "task <i>").
workload write_workload(const std::filesystem::path& path,
                        std::size_t count,
                        const std::function<std::string(std::size_t)>& payload = {});

/// What a user checks in the sink's output: every task exactly once, nothing else.
struct results_check {
    std::uint64_t tasks = 0;
    std::uint64_t records = 0;
    std::uint64_t lost = 0;           ///< tasks with no record
    std::uint64_t unexpected = 0;     ///< records whose key is no task's
    std::uint64_t duplicated = 0;     ///< records beyond the first for one task
    std::uint64_t duplicate_ids = 0;  ///< records repeating a task id already seen
    std::uint64_t malformed = 0;      ///< lines that are not a JSON object with id and key
    std::uint64_t rejected = 0;       ///< records the caller's `verify` refused
    std::uint64_t ok = 0, failed = 0, dead = 0;

    bool exactly_once() const {
        return lost == 0 && unexpected == 0 && duplicated == 0 && duplicate_ids == 0 &&
               malformed == 0 && rejected == 0;
    }
    std::string summary() const;
};

/// Checks one record of task number `index` (its position in the workload), e.g. that echo
/// returned the payload.
using record_verifier = std::function<bool(std::size_t index, const nlohmann::json& record)>;

/// Counts per key in `results_path` (JSON lines) against the workload. `verify`, when given,
/// sees every record whose key is a task's.
results_check check_results(const workload& tasks,
                            const std::filesystem::path& results_path,
                            const record_verifier& verify = {});

/// Stops a pipeline's processes: SIGTERM to the workers together, then to the sink and the
/// ventilator together, each group given a grace period before SIGKILL. All are reaped.
void stop_pipeline(const std::vector<std::unique_ptr<child_process>>& workers,
                   child_process* sink,
                   child_process* ventilator);

/// The JSON object printed by a `taskvent status --json` run; throws, with `diagnostics()`,
/// when the command failed or printed something else.
nlohmann::json status_json(const command_result& r,
                           const std::function<std::string()>& diagnostics);

/// Polls `status` until `pred` holds and returns the status that satisfied it; when
/// `timeout` passes first, throws naming `what`, the last status and `diagnostics()`.
nlohmann::json poll_status(const std::function<nlohmann::json()>& status,
                           const std::function<bool(const nlohmann::json&)>& pred,
                           const std::string& what,
                           std::chrono::milliseconds timeout,
                           const std::function<std::string()>& diagnostics,
                           std::chrono::milliseconds interval = std::chrono::milliseconds(50));

/// Waits for `sink` to exit and returns how it ended; when `timeout` passes first, throws
/// with the ventilator's last status (or why it gave none) and `diagnostics()`.
exit_status wait_for_exit_of_sink(child_process& sink,
                                  std::chrono::milliseconds timeout,
                                  const std::function<nlohmann::json()>& status,
                                  const std::function<std::string()>& diagnostics);

/// The sink's stats file (written at its exit) as JSON; throws when it is not.
nlohmann::json read_sink_stats(const std::filesystem::path& path);

struct worker_options {
    std::string handler = "echo";
    std::uint32_t concurrency = 4;
    std::vector<std::string> extra_flags;  ///< e.g. {"--prefetch", "8"}
};

struct pipeline_options {
    std::uint32_t workers = 4;
    std::uint64_t expect = 0;  ///< the sink exits once this many tasks are recorded; 0: never
    std::uint32_t heartbeat_interval_ms = 1000;
    std::uint32_t heartbeat_liveness = 3;
    std::uint32_t confirm_timeout_ms = 10000;
    std::vector<std::string> ventilator_flags;  ///< extra flags
    std::vector<std::string> sink_flags;        ///< extra flags
    worker_options worker;
    std::string log_level = "info";
};

class pipeline {
  public:
    /// Starts the ventilator, the sink and the workers, each once the endpoints it needs are
    /// known. Files (logs, output, ready files) go to `dir`. Throws with log tails when a
    /// program does not come up.
    pipeline(const std::filesystem::path& dir, pipeline_options opts);
    /// SIGTERM to everything still running, a short grace, then SIGKILL; all reaped.
    ~pipeline();
    pipeline(const pipeline&) = delete;
    pipeline& operator=(const pipeline&) = delete;

    const std::string& workers_endpoint() const { return workers_endpoint_; }
    const std::string& control_endpoint() const { return control_endpoint_; }
    const std::string& results_endpoint() const { return results_endpoint_; }
    const std::filesystem::path& output_path() const { return output_; }
    const std::filesystem::path& dir() const { return dir_; }

    child_process& ventilator() { return *ventilator_; }
    child_process& sink() { return *sink_; }
    /// Every worker started so far, killed ones included, in start order.
    std::vector<std::unique_ptr<child_process>>& workers() { return workers_; }
    /// Workers not yet exited.
    std::vector<child_process*> live_workers();

    /// Starts one more worker with the pipeline's worker options plus `extra_flags`.
    child_process& add_worker(const std::vector<std::string>& extra_flags = {});

    /// `taskvent submit FILE --control ...` plus `extra_args`, run to completion.
    command_result submit(const std::filesystem::path& tasks_file,
                          const std::vector<std::string>& extra_args = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(120));

    /// The ventilator's view (`taskvent status --json`). Throws when it does not answer.
    nlohmann::json status();

    /// Polls status until `pred` holds; throws with the last status and the logs when
    /// `timeout` passes first. Returns the status that satisfied it.
    nlohmann::json wait_for_status(const std::function<bool(const nlohmann::json&)>& pred,
                                   const std::string& what,
                                   std::chrono::milliseconds timeout);

    /// Waits for the sink to exit (it does once `expect` tasks are recorded) and returns how
    /// it ended. Throws with the status and the logs when `timeout` passes first.
    exit_status wait_for_sink_exit(std::chrono::milliseconds timeout);

    /// The sink's stats file (written at its exit).
    nlohmann::json sink_stats() const;

    /// Every process's name, pid, state and last log lines: for failure messages.
    std::string diagnostics(std::size_t lines = 15);

  private:
    child_process& start(const std::string& program,
                         const std::string& log_name,
                         std::vector<std::string> args);

    std::filesystem::path dir_;
    pipeline_options opts_;
    std::filesystem::path output_;
    std::filesystem::path stats_file_;
    std::string workers_endpoint_;
    std::string control_endpoint_;
    std::string results_endpoint_;
    std::unique_ptr<child_process> ventilator_;
    std::unique_ptr<child_process> sink_;
    std::vector<std::unique_ptr<child_process>> workers_;
    unsigned worker_seq_ = 0;
};

}  // namespace taskvent::testing
