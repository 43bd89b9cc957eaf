// Child processes for process-level tests: start a program with its output in a log file,
// signal it, wait for it with a deadline, and make sure it is gone when the test ends.
// Every child is ended by its pid and reaped; nothing here ever looks a process up by name.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace taskvent::testing {

/// build/bin/<name>: where the programs under test are.
std::filesystem::path program_path(const std::string& name);

/// A fresh directory per test under $TMPDIR (or /tmp), named after the running test. Removed
/// when the test passed; kept, with its path printed, when it failed, so logs can be read.
class temp_dir {
  public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

  private:
    std::filesystem::path path_;
};

/// How a child ended.
struct exit_status {
    bool exited = false;  ///< true: normal exit with `code`; false: killed by `signal`
    int code = 0;
    int signal = 0;

    bool success() const { return exited && code == 0; }
    std::string describe() const;
};

struct spawn_options {
    std::filesystem::path program;
    std::vector<std::string> args;
    /// Extra variables on top of the test's own environment. TASKVENT_* variables of the
    /// test's environment are not passed on, so a developer's shell cannot change a test.
    std::vector<std::pair<std::string, std::string>> env;
    std::filesystem::path stdout_path;  ///< required
    std::filesystem::path stderr_path;  ///< empty: same file as stdout
};

/// One running program. The destructor kills (SIGKILL) and reaps it if it still runs. The
/// child also gets SIGKILL from the kernel when the test process dies (PR_SET_PDEATHSIG), so
/// a test killed by ctest's timeout leaves nothing behind.
class child_process {
  public:
    explicit child_process(spawn_options opts);
    ~child_process();
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& name() const { return name_; }
    const std::filesystem::path& log_path() const { return opts_.stdout_path; }

    /// True while the child has not exited (a stopped child is running). Reaps it if it has.
    bool running();
    /// The exit status once reaped.
    const std::optional<exit_status>& status() const { return status_; }

    /// Sends `sig` to this pid only; a no-op once the child has been reaped.
    void signal(int sig);

    /// Waits until the child exits or `timeout` passes. Empty on timeout.
    std::optional<exit_status> wait_for_exit(std::chrono::milliseconds timeout);

    /// SIGKILL (after SIGCONT, in case it is stopped) and reap.
    exit_status kill_and_reap();

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns how it ended.
    exit_status terminate(std::chrono::milliseconds grace);

    /// The last `lines` lines of stdout (and of stderr when it is a separate file).
    std::string log_tail(std::size_t lines = 20) const;

  private:
    bool try_reap(bool block);

    spawn_options opts_;
    std::string name_;
    pid_t pid_ = -1;
    std::optional<exit_status> status_;
};

/// What a short command printed and how it ended.
struct command_result {
    exit_status status;
    std::string out;
    std::string err;
    std::chrono::milliseconds elapsed{0};
};

/// Runs a command to completion with its output in files under `dir` (named after `tag`),
/// and returns what it printed. Throws std::runtime_error when it overruns `timeout` (the
/// command is killed first).
command_result run_command(const std::filesystem::path& dir,
                           const std::string& tag,
                           const std::filesystem::path& program,
                           std::vector<std::string> args,
                           std::chrono::milliseconds timeout);

/// Polls for a ready file (a JSON object) until it exists, parses and names every key in
/// `keys`. Throws with the process's log tail when `owner` exits first or `timeout` passes.
nlohmann::json read_ready_file(const std::filesystem::path& path,
                               const std::vector<std::string>& keys,
                               child_process& owner,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// The last `lines` lines of a text file; empty when it cannot be read.
std::string file_tail(const std::filesystem::path& path, std::size_t lines);

/// Whole file as a string. Throws when it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace taskvent::testing
