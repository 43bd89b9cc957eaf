// The exec handler: one child process per task, /bin/sh -c COMMAND, payload on stdin,
// stdout as the result. All three pipes are served by one poll loop so that a child which
// never reads its stdin, or writes a lot before reading, cannot deadlock the handler; the
// child gets a process group of its own so that a time limit kills everything it started.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "taskvent/worker/builtin_handlers.hpp"

extern char** environ;  // NOLINT: POSIX declares it nowhere else

namespace taskvent::worker {
namespace {

using steady = std::chrono::steady_clock;

/// The exit status POSIX programs use for "try again later" (sysexits.h EX_TEMPFAIL).
constexpr int exit_tempfail = 75;
/// How often the loop wakes to notice cancellation when no pipe has anything to say.
constexpr std::chrono::milliseconds cancel_poll{20};
/// Once the command has exited and its group is killed, how long an escaped process (one
/// that left the group with setsid) may keep the pipes open before we stop reading.
constexpr std::chrono::milliseconds escaped_grace{100};
constexpr std::size_t io_chunk = 64 * 1024;

class unique_fd {
  public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

struct pipe_pair {
    unique_fd read;
    unique_fd write;
};

pipe_pair make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        throw std::system_error(errno, std::generic_category(), "exec: pipe2");
    }
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

void set_nonblocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// Blocks SIGPIPE on this thread while the handler writes to the child's stdin: a child
/// that exits without reading must give us EPIPE, not kill the worker (unit tests and
/// embedding programs do not necessarily ignore SIGPIPE). A SIGPIPE left pending is
/// consumed before the old mask comes back.
class sigpipe_guard {
  public:
    sigpipe_guard() {
        sigemptyset(&pipe_set_);
        sigaddset(&pipe_set_, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_);
    }
    ~sigpipe_guard() {
        const timespec zero{};
        while (sigtimedwait(&pipe_set_, nullptr, &zero) == SIGPIPE) {
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    sigpipe_guard(const sigpipe_guard&) = delete;
    sigpipe_guard& operator=(const sigpipe_guard&) = delete;

  private:
    sigset_t pipe_set_{};
    sigset_t old_{};
};

/// The child's environment: ours, minus stale task variables, plus this task's.
std::vector<std::string> child_environment(const task_context& ctx) {
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        if (std::strncmp(*e, "TASKVENT_TASK_", 14) != 0) {
            env.emplace_back(*e);
        }
    }
    env.push_back(fmt::format("TASKVENT_TASK_ID={}", ctx.id.value));
    env.push_back(fmt::format("TASKVENT_TASK_ATTEMPT={}", ctx.attempt));
    // An environment string ends at the first NUL; a key holding one cannot be passed.
    if (ctx.key.find('\0') == std::string_view::npos) {
        env.push_back(fmt::format("TASKVENT_TASK_KEY={}", ctx.key));
    }
    return env;
}

/// Runs in the forked child: only async-signal-safe calls until execve.
[[noreturn]] void exec_child(
    int in_fd, int out_fd, int err_fd, char* const* argv, char* const* envp) {
    ::setpgid(0, 0);
    const int targets[3] = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};
    const int sources[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3; ++i) {
        if (sources[i] == targets[i]) {
            ::fcntl(targets[i], F_SETFD, 0);  // dup2 onto itself would leave CLOEXEC set
        } else {
            ::dup2(sources[i], targets[i]);
        }
    }
    // The worker ignores SIGPIPE and blocks signals on handler threads; an ignored signal
    // and the signal mask both survive execve, and the command must start from defaults.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve("/bin/sh", argv, envp);
    ::_exit(127);
}

std::string trim_trailing_newlines(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) {
        s.pop_back();
    }
    return s;
}

/// One run of the command: owns the pipes and the child until it is reaped.
class exec_run {
  public:
    exec_run(const exec_options& opts, const task_context& ctx) : opts_(opts), ctx_(ctx) {}
    ~exec_run() {
        // Only reached with a live child when something threw: never leave it running
        // or unreaped.
        if (pid_ > 0) {
            kill_group();
            reap();
        }
    }
    exec_run(const exec_run&) = delete;
    exec_run& operator=(const exec_run&) = delete;

    handler_result run() {
        const auto start = steady::now();
        auto limit = opts_.timeout.count() > 0 ? start + opts_.timeout : steady::time_point::max();
        limit = std::min(limit, ctx_.deadline);
        const auto limit_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(limit - start).count();

        spawn();
        const auto end = pump(limit);
        if (end != ending::exited) {
            kill_group();
        }
        const int status = reap();

        switch (end) {
            case ending::timed_out:
                return handler_result::retry(fmt::format("timed out after {} ms", limit_ms));
            case ending::cancelled:
                return handler_result::retry("cancelled");
            case ending::exited:
                break;
        }
        return judge(status);
    }

  private:
    enum class ending { exited, timed_out, cancelled };

    void spawn() {
        // Everything the child needs is built before fork: after fork, in a threaded
        // process, the child may only make async-signal-safe calls.
        env_ = child_environment(ctx_);
        std::vector<char*> envp;
        envp.reserve(env_.size() + 1);
        for (auto& e : env_) {
            envp.push_back(e.data());
        }
        envp.push_back(nullptr);
        std::string arg0 = "sh", arg1 = "-c", command = opts_.command;
        char* argv[] = {arg0.data(), arg1.data(), command.data(), nullptr};

        auto in = make_pipe();
        auto out = make_pipe();
        auto err = make_pipe();

        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::system_error(errno, std::generic_category(), "exec: fork");
        }
        if (pid_ == 0) {
            exec_child(in.read.get(), out.write.get(), err.write.get(), argv, envp.data());
        }
        // Also from the parent, so that the group exists before we might signal it.
        ::setpgid(pid_, pid_);

        stdin_ = std::move(in.write);
        stdout_ = std::move(out.read);
        stderr_ = std::move(err.read);
        set_nonblocking(stdin_.get());
        set_nonblocking(stdout_.get());
        set_nonblocking(stderr_.get());
        // A pidfd makes the child's exit a poll event; without one (old kernel, seccomp)
        // the loop checks with waitid on each short wake-up instead.
        // Via syscall(): glibc 2.36's <sys/pidfd.h> lacks C linkage for C++ callers.
        pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
        if (ctx_.payload.empty()) {
            stdin_.reset();
        }
    }

    ending pump(steady::time_point limit) {
        bool exited = false;
        steady::time_point exited_at{};
        for (;;) {
            if (!exited && child_exited()) {
                exited = true;
                exited_at = steady::now();
                // Whatever the command left behind in its group dies with it; killed while
                // the child is still an unreaped zombie, so its pid (the group id) cannot
                // have been reused.
                kill_group();
                stdin_.reset();
            }
            const auto now = steady::now();
            if (exited && ((!stdout_ && !stderr_) || now - exited_at >= escaped_grace)) {
                return ending::exited;
            }
            if (now >= limit) {
                return ending::timed_out;
            }
            if (ctx_.cancelled()) {
                return ending::cancelled;
            }

            auto wait = std::min<steady::duration>(limit - now, cancel_poll);
            pollfd fds[4];
            nfds_t n = 0;
            const auto add = [&](const unique_fd& fd, short events) {
                if (fd) {
                    fds[n++] = {fd.get(), events, 0};
                }
            };
            add(stdin_, POLLOUT);
            add(stdout_, POLLIN);
            add(stderr_, POLLIN);
            if (!exited) {
                add(pidfd_, POLLIN);
            }
            const auto wait_ms =
                std::chrono::ceil<std::chrono::milliseconds>(std::max(wait, steady::duration{}));
            if (::poll(fds, n, static_cast<int>(wait_ms.count())) < 0 && errno != EINTR) {
                throw std::system_error(errno, std::generic_category(), "exec: poll");
            }
            for (nfds_t i = 0; i < n; ++i) {
                if (fds[i].revents == 0) {
                    continue;
                }
                if (stdin_ && fds[i].fd == stdin_.get()) {
                    feed_stdin();
                } else if (stdout_ && fds[i].fd == stdout_.get()) {
                    drain(stdout_, [this](const char* d, std::size_t s) { keep_stdout(d, s); });
                } else if (stderr_ && fds[i].fd == stderr_.get()) {
                    drain(stderr_, [this](const char* d, std::size_t s) { keep_stderr(d, s); });
                }
            }
        }
    }

    bool child_exited() {
        if (pidfd_) {
            pollfd p{pidfd_.get(), POLLIN, 0};
            return ::poll(&p, 1, 0) > 0;
        }
        siginfo_t info{};
        // WNOWAIT: look without reaping, so the pid stays ours until reap().
        return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
               info.si_pid == pid_;
    }

    void feed_stdin() {
        const auto payload = ctx_.payload;
        while (written_ < payload.size()) {
            const auto chunk = std::min(io_chunk, payload.size() - written_);
            const auto n = ::write(stdin_.get(), payload.data() + written_, chunk);
            if (n > 0) {
                written_ += static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                return;
            } else {
                break;  // EPIPE: the child closed stdin or exited; it wants no more
            }
        }
        stdin_.reset();  // all written (or refused): the child sees end of input
    }

    template <typename Keep>
    void drain(unique_fd& fd, Keep keep) {
        char buf[io_chunk];
        for (;;) {
            const auto n = ::read(fd.get(), buf, sizeof buf);
            if (n > 0) {
                keep(buf, static_cast<std::size_t>(n));
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                return;
            } else {
                fd.reset();  // end of file (or an error that will not go away)
                return;
            }
        }
    }

    void keep_stdout(const char* data, std::size_t size) {
        // Past the limit we keep reading (and discarding) so that the child is not blocked.
        stdout_total_ += size;
        if (output_.size() < opts_.max_output_bytes) {
            output_.append(data, std::min(size, opts_.max_output_bytes - output_.size()));
        }
    }

    void keep_stderr(const char* data, std::size_t size) {
        stderr_tail_.append(data, size);
        // Trim in steps rather than on every read so that a chatty child costs O(bytes).
        if (stderr_tail_.size() > 2 * opts_.stderr_tail_bytes + io_chunk) {
            stderr_tail_.erase(0, stderr_tail_.size() - opts_.stderr_tail_bytes);
        }
    }

    std::string stderr_tail() const {
        const auto keep = std::min(stderr_tail_.size(), opts_.stderr_tail_bytes);
        return trim_trailing_newlines(stderr_tail_.substr(stderr_tail_.size() - keep));
    }

    void kill_group() const {
        if (::kill(-pid_, SIGKILL) != 0) {
            ::kill(pid_, SIGKILL);  // setpgid lost a race with exec: at least the child
        }
    }

    int reap() {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

    handler_result judge(int status) const {
        const auto tail = stderr_tail();
        const auto with_tail = [&](std::string head) {
            return tail.empty() ? head : head + ": " + tail;
        };
        if (WIFSIGNALED(status)) {
            const int sig = WTERMSIG(status);
            return handler_result::retry(
                with_tail(fmt::format("killed by signal {} ({})", sig, ::strsignal(sig))));
        }
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code == 0) {
            if (stdout_total_ > opts_.max_output_bytes) {
                return handler_result::failed(
                    fmt::format("stdout of {} bytes exceeds the {}-byte limit",
                                stdout_total_,
                                opts_.max_output_bytes));
            }
            return handler_result::ok(output_);
        }
        if (code == exit_tempfail) {
            return handler_result::retry(
                with_tail(fmt::format("exit status {} (temporary failure)", code)));
        }
        return handler_result::failed(with_tail(fmt::format("exit status {}", code)));
    }

    const exec_options& opts_;
    const task_context& ctx_;
    std::vector<std::string> env_;
    pid_t pid_ = -1;
    unique_fd stdin_, stdout_, stderr_, pidfd_;
    std::size_t written_ = 0;
    std::string output_;
    std::size_t stdout_total_ = 0;
    std::string stderr_tail_;
};

}  // namespace

handler make_exec_handler(exec_options opts) {
    if (opts.command.empty()) {
        throw std::invalid_argument("exec handler needs a command");
    }
    return [opts = std::move(opts)](const task_context& ctx) {
        sigpipe_guard guard;
        return exec_run(opts, ctx).run();
    };
}

}  // namespace taskvent::worker
