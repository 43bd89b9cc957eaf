#include "process.hpp"

#include "taskvent/temp_dir.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace taskvent::testing {
namespace {

using steady = std::chrono::steady_clock;

/// How often waits re-check their condition. Short enough not to slow tests down, long
/// enough not to spin a core the programs under test need.
constexpr auto poll_interval = std::chrono::milliseconds(5);

std::string sanitize(std::string s) {
    for (auto& c : s) {
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!plain) {
            c = '_';
        }
    }
    return s;
}

int open_for_append(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        throw std::system_error(errno, std::generic_category(), "cannot open " + path.string());
    }
    return fd;
}

/// The environment for a child: ours without TASKVENT_* variables, plus the extras.
std::vector<std::string> child_environment(
    const std::vector<std::pair<std::string, std::string>>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        if (std::strncmp(*e, "TASKVENT_", 9) != 0) {
            env.emplace_back(*e);
        }
    }
    for (const auto& [k, v] : extra) {
        env.push_back(k + "=" + v);
    }
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (auto& s : strings) {
        out.push_back(s.data());
    }
    out.push_back(nullptr);
    return out;
}

exit_status decode_wait_status(int ws) {
    exit_status s;
    if (WIFEXITED(ws)) {
        s.exited = true;
        s.code = WEXITSTATUS(ws);
    } else if (WIFSIGNALED(ws)) {
        s.signal = WTERMSIG(ws);
    }
    return s;
}

}  // namespace

std::filesystem::path program_path(const std::string& name) {
    return std::filesystem::path(TASKVENT_BIN_DIR) / name;
}

temp_dir::temp_dir() {
    std::string stem = "taskvent-test";
    if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
        stem += "-" + sanitize(std::string(info->test_suite_name()) + "." + info->name());
    }
    path_ = make_temp_dir(stem);
}

temp_dir::~temp_dir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // An exception on its way out of the test body is a failure gtest has not recorded yet.
    const bool failed = std::uncaught_exceptions() > 0 ||
                        (info != nullptr && info->result() != nullptr && info->result()->Failed());
    if (failed || std::getenv("TASKVENT_KEEP_TEST_DIRS") != nullptr) {
        std::cerr << "[ keeping  ] logs and files of this test are in " << path_.string() << '\n';
        return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

std::string exit_status::describe() const {
    if (exited) {
        return "exit code " + std::to_string(code);
    }
    return std::string("killed by signal ") + std::to_string(signal) + " (" + ::strsignal(signal) +
           ")";
}

child_process::child_process(spawn_options opts) : opts_(std::move(opts)) {
    name_ = opts_.program.filename().string();
    if (opts_.stdout_path.empty()) {
        throw std::invalid_argument("child_process: stdout_path is required");
    }

    // Everything the child needs is prepared before fork: after it, in a threaded parent,
    // the child may only make async-signal-safe calls until exec.
    std::vector<std::string> argv_strings;
    argv_strings.push_back(opts_.program.string());
    argv_strings.insert(argv_strings.end(), opts_.args.begin(), opts_.args.end());
    auto env_strings = child_environment(opts_.env);
    auto argv = c_strings(argv_strings);
    auto envp = c_strings(env_strings);
    const int out_fd = open_for_append(opts_.stdout_path);
    int err_fd = out_fd;
    if (!opts_.stderr_path.empty() && opts_.stderr_path != opts_.stdout_path) {
        try {
            err_fd = open_for_append(opts_.stderr_path);
        } catch (...) {
            ::close(out_fd);
            throw;
        }
    }
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid == 0) {
        // The kernel kills us if the test process dies, even by SIGKILL.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(126);  // the parent died before prctl took effect
        }
        // Signals blocked or ignored by the test runner must not leak into the program.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) {
            ::signal(sig, SIG_DFL);
        }
        if (null_fd >= 0) {
            ::dup2(null_fd, STDIN_FILENO);
        }
        ::dup2(out_fd, STDOUT_FILENO);
        ::dup2(err_fd, STDERR_FILENO);
        ::execve(argv[0], argv.data(), envp.data());
        const char msg[] = "child_process: execve failed\n";
        (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(127);
    }
    const int fork_errno = errno;
    ::close(out_fd);
    if (err_fd != out_fd) {
        ::close(err_fd);
    }
    if (null_fd >= 0) {
        ::close(null_fd);
    }
    if (pid < 0) {
        throw std::system_error(fork_errno, std::generic_category(), "fork");
    }
    pid_ = pid;
}

child_process::~child_process() {
    if (pid_ > 0 && !status_) {
        kill_and_reap();
    }
}

bool child_process::try_reap(bool block) {
    if (status_ || pid_ <= 0) {
        return true;
    }
    int ws = 0;
    pid_t r = 0;
    do {
        r = ::waitpid(pid_, &ws, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) {
        status_ = decode_wait_status(ws);
        return true;
    }
    return false;
}

bool child_process::running() {
    return !try_reap(false);
}

void child_process::signal(int sig) {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, sig);
    }
}

std::optional<exit_status> child_process::wait_for_exit(std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
        if (try_reap(false)) {
            return status_;
        }
        if (steady::now() >= deadline) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(poll_interval);
    }
}

exit_status child_process::kill_and_reap() {
    if (!status_ && pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::kill(pid_, SIGCONT);
        try_reap(true);
    }
    return status_.value_or(exit_status{});
}

exit_status child_process::terminate(std::chrono::milliseconds grace) {
    if (status_) {
        return *status_;
    }
    signal(SIGCONT);
    signal(SIGTERM);
    if (auto s = wait_for_exit(grace)) {
        return *s;
    }
    return kill_and_reap();
}

std::string child_process::log_tail(std::size_t lines) const {
    std::string out = file_tail(opts_.stdout_path, lines);
    if (!opts_.stderr_path.empty() && opts_.stderr_path != opts_.stdout_path) {
        out += file_tail(opts_.stderr_path, lines);
    }
    return out;
}

command_result run_command(const std::filesystem::path& dir,
                           const std::string& tag,
                           const std::filesystem::path& program,
                           std::vector<std::string> args,
                           std::chrono::milliseconds timeout) {
    // A counter keeps the files of repeated commands (status polls) apart.
    static std::atomic<unsigned> counter{0};
    const auto n = counter.fetch_add(1);
    const auto base = dir / ("cmd-" + std::to_string(n) + "-" + sanitize(tag));
    spawn_options opts;
    opts.program = program;
    opts.args = std::move(args);
    opts.stdout_path = base.string() + ".out";
    opts.stderr_path = base.string() + ".err";

    const auto start = steady::now();
    child_process child(opts);
    auto status = child.wait_for_exit(timeout);
    if (!status) {
        child.kill_and_reap();
        throw std::runtime_error(tag + ": did not finish within " +
                                 std::to_string(timeout.count()) + " ms; output:\n" +
                                 child.log_tail(20));
    }
    command_result r;
    r.status = *status;
    r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
    r.out = read_file(opts.stdout_path);
    r.err = read_file(opts.stderr_path);
    return r;
}

nlohmann::json read_ready_file(const std::filesystem::path& path,
                               const std::vector<std::string>& keys,
                               child_process& owner,
                               std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
        std::ifstream in(path);
        if (in) {
            std::stringstream ss;
            ss << in.rdbuf();
            auto j = nlohmann::json::parse(ss.str(), nullptr, false);
            bool complete = j.is_object();
            for (const auto& k : keys) {
                complete = complete && j.contains(k) && j[k].is_string();
            }
            if (complete) {
                return j;
            }
        }
        if (!owner.running()) {
            throw std::runtime_error(owner.name() + " exited (" + owner.status()->describe() +
                                     ") before writing " + path.string() + "; log tail:\n" +
                                     owner.log_tail(30));
        }
        if (steady::now() >= deadline) {
            throw std::runtime_error(owner.name() + " wrote no complete ready file " +
                                     path.string() + " within " + std::to_string(timeout.count()) +
                                     " ms; log tail:\n" + owner.log_tail(30));
        }
        std::this_thread::sleep_for(poll_interval);
    }
}

std::string file_tail(const std::filesystem::path& path, std::size_t lines) {
    std::ifstream in(path);
    if (!in) {
        return {};
    }
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
        last.push_back(std::move(line));
        if (last.size() > lines) {
            last.pop_front();
        }
    }
    std::string out;
    for (const auto& l : last) {
        out += l;
        out += '\n';
    }
    return out;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + path.string());
    }
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace taskvent::testing
