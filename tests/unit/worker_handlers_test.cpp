// The built-in handlers, called directly with a hand-made task_context.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include "taskvent/worker/builtin_handlers.hpp"

namespace {

namespace tw = taskvent::worker;
using namespace std::chrono_literals;
using kind = tw::handler_result::kind;
using steady = std::chrono::steady_clock;

/// Generous: these bound how long a broken handler may hang a test, not how fast it is.
constexpr auto patience = 10s;

tw::task_context context(std::string_view payload, const tw::cancel_source* cancel = nullptr) {
    return {.id = taskvent::task_id{42},
            .attempt = 1,
            .key = "k42",
            .payload = payload,
            .deadline = steady::time_point::max(),
            .cancel = cancel};
}

tw::handler exec(std::string command,
                 std::chrono::milliseconds timeout = 30s,
                 std::size_t max_output_bytes = 16 * 1024 * 1024) {
    tw::exec_options opts;
    opts.command = std::move(command);
    opts.timeout = timeout;
    opts.max_output_bytes = max_output_bytes;
    return tw::make_exec_handler(std::move(opts));
}

/// Runs a handler on another thread so that the test can bound how long it takes.
tw::handler_result run_bounded(const tw::handler& h, const tw::task_context& ctx) {
    auto f = std::async(std::launch::async, [&] { return h(ctx); });
    if (f.wait_for(patience) != std::future_status::ready) {
        ADD_FAILURE() << "handler did not return within " << patience.count() << " s";
        std::abort();  // the handler thread holds references into this frame
    }
    return f.get();
}

/// Dead means gone, or a zombie nobody reaps (a container's PID 1 may not).
bool process_dead(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) {
        return true;
    }
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

std::filesystem::path temp_file(const std::string& stem) {
    return std::filesystem::temp_directory_path() /
           (stem + "-" + std::to_string(::getpid()) + "-" +
            std::to_string(steady::now().time_since_epoch().count()));
}

}  // namespace

TEST(echo_handler, returns_the_payload_as_the_result) {
    const std::string payload("bytes\0and more", 14);
    const auto r = tw::make_echo_handler()(context(payload));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), payload);
}

TEST(sleep_handler, sleeps_for_the_payload_in_milliseconds_when_it_is_an_integer) {
    const auto h = tw::make_sleep_handler(10s);
    const auto start = steady::now();
    const auto r = run_bounded(h, context(" 30\n"));
    EXPECT_GE(steady::now() - start, 30ms);
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), " 30\n");
}

TEST(sleep_handler, falls_back_to_the_configured_duration_for_other_payloads) {
    const auto h = tw::make_sleep_handler(20ms);
    for (const std::string_view payload : {"abc", "-5", "12x", ""}) {
        const auto start = steady::now();
        const auto r = run_bounded(h, context(payload));
        EXPECT_GE(steady::now() - start, 20ms) << payload;
        EXPECT_EQ(r.outcome(), kind::ok) << payload;
    }
}

TEST(sleep_handler, wakes_early_when_the_task_is_cancelled) {
    const auto h = tw::make_sleep_handler(10ms);
    tw::cancel_source cancel;
    const auto ctx = context("3600000", &cancel);  // an hour
    auto f = std::async(std::launch::async, [&] { return h(ctx); });
    cancel.cancel();
    ASSERT_EQ(f.wait_for(patience), std::future_status::ready);
    EXPECT_EQ(f.get().outcome(), kind::retry);
}

TEST(sha256_handler, hashes_abc_to_the_known_digest_in_one_round) {
    const auto r = tw::make_sha256_handler(1)(context("abc"));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(sha256_handler, hashes_the_raw_digest_again_for_each_further_round) {
    // SHA-256 applied twice to "abc" (the well-known double-SHA-256 vector), and 1000 times.
    EXPECT_EQ(tw::make_sha256_handler(2)(context("abc")).text(),
              "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    EXPECT_EQ(tw::make_sha256_handler(1000)(context("abc")).text(),
              "fc8a6b86a13f71cd9a67f558ab6fd82a3dd89186163a017ed8051acf6d3f8f99");
}

TEST(sha256_handler, refuses_zero_rounds) {
    EXPECT_THROW(tw::make_sha256_handler(0), std::invalid_argument);
}

TEST(exec_handler, returns_stdout_when_the_command_exits_zero) {
    const auto r = run_bounded(exec("tr a-z A-Z"), context("hello"));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), "HELLO");
}

TEST(exec_handler, gives_the_command_the_task_in_its_environment) {
    const auto r =
        run_bounded(exec("printf '%s/%s/%s' \"$TASKVENT_TASK_ID\" \"$TASKVENT_TASK_ATTEMPT\" "
                         "\"$TASKVENT_TASK_KEY\""),
                    context(""));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), "42/1/k42");
}

TEST(exec_handler, streams_a_large_payload_through_and_back) {
    std::string payload(4 * 1024 * 1024, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i) {
        payload[i] = static_cast<char>(i * 7919 % 251);
    }
    const auto r = run_bounded(exec("cat"), context(payload));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_TRUE(r.text() == payload) << "got " << r.text().size() << " bytes";
}

TEST(exec_handler, fails_with_the_tail_of_stderr_on_other_exit_codes) {
    const auto r = run_bounded(
        exec("head -c 5000 /dev/zero | tr '\\0' x >&2; echo the-end >&2; exit 3"), context(""));
    EXPECT_EQ(r.outcome(), kind::failed);
    EXPECT_EQ(r.text().rfind("exit status 3: ", 0), 0u) << r.text();
    EXPECT_TRUE(r.text().ends_with("xxxxthe-end")) << r.text();
    EXPECT_LE(r.text().size(), std::string("exit status 3: ").size() + 2048);
    EXPECT_GE(r.text().size(), 2000u);
}

TEST(exec_handler, asks_for_a_retry_on_exit_75) {
    const auto r = run_bounded(exec("echo busy >&2; exit 75"), context(""));
    EXPECT_EQ(r.outcome(), kind::retry);
    EXPECT_EQ(r.text(), "exit status 75 (temporary failure): busy");
}

TEST(exec_handler, asks_for_a_retry_when_the_command_is_killed_by_a_signal) {
    const auto r = run_bounded(exec("kill -KILL $$"), context(""));
    EXPECT_EQ(r.outcome(), kind::retry);
    EXPECT_EQ(r.text().rfind("killed by signal 9", 0), 0u) << r.text();
}

TEST(exec_handler, kills_the_whole_process_group_at_the_time_limit) {
    const auto pid_file = temp_file("exec-group");
    const auto r = run_bounded(
        exec("sleep 600 & echo $! > '" + pid_file.string() + "'; wait", 300ms), context(""));
    EXPECT_EQ(r.outcome(), kind::retry);
    EXPECT_EQ(r.text(), "timed out after 300 ms");

    pid_t grandchild = 0;
    std::ifstream(pid_file) >> grandchild;
    std::filesystem::remove(pid_file);
    ASSERT_GT(grandchild, 0);
    const auto deadline = steady::now() + patience;
    while (!process_dead(grandchild) && steady::now() < deadline) {
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(process_dead(grandchild)) << "background child " << grandchild << " survived";
    if (!process_dead(grandchild)) {
        ::kill(grandchild, SIGKILL);
    }
}

TEST(exec_handler, stops_at_the_task_deadline_when_it_comes_before_its_own_limit) {
    auto ctx = context("");
    ctx.deadline = steady::now() + 200ms;
    const auto r = run_bounded(exec("sleep 600", 30s), ctx);
    EXPECT_EQ(r.outcome(), kind::retry);
    EXPECT_TRUE(r.text().starts_with("timed out after")) << r.text();
}

TEST(exec_handler, stops_the_command_when_the_task_is_cancelled) {
    tw::cancel_source cancel;
    const auto ctx = context("", &cancel);
    const auto h = exec("sleep 600");
    auto f = std::async(std::launch::async, [&] { return h(ctx); });
    cancel.cancel();
    ASSERT_EQ(f.wait_for(patience), std::future_status::ready);
    const auto r = f.get();
    EXPECT_EQ(r.outcome(), kind::retry);
    EXPECT_EQ(r.text(), "cancelled");
}

TEST(exec_handler, does_not_deadlock_on_a_child_that_ignores_a_large_stdin) {
    // Far more than a pipe holds: a handler that wrote stdin before reading stdout, with
    // blocking writes, would hang here forever.
    const std::string payload(8 * 1024 * 1024, 'p');
    const auto r = run_bounded(exec("sleep 0.2; echo done"), context(payload));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text(), "done\n");
}

TEST(exec_handler, does_not_deadlock_on_a_child_that_writes_before_it_reads) {
    const std::string payload(2 * 1024 * 1024, 'p');
    const auto r = run_bounded(exec("head -c 3000000 /dev/zero; cat >/dev/null; echo ok >&2"),
                               context(payload));
    EXPECT_EQ(r.outcome(), kind::ok);
    EXPECT_EQ(r.text().size(), 3000000u);
}

TEST(exec_handler, fails_rather_than_truncate_an_oversized_stdout) {
    const auto r = run_bounded(exec("head -c 5000 /dev/zero", 30s, 1000), context(""));
    EXPECT_EQ(r.outcome(), kind::failed);
    EXPECT_EQ(r.text(), "stdout of 5000 bytes exceeds the 1000-byte limit");
}

TEST(builtin_handlers, names_the_valid_handlers_when_the_name_is_unknown) {
    tw::worker_config cfg;
    cfg.handler = "nope";
    try {
        (void)tw::make_builtin_handler(cfg);
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "unknown handler 'nope' (valid: echo, sleep, sha256, exec)");
    }
}

TEST(builtin_handlers, picks_each_built_in_handler_by_name) {
    tw::worker_config cfg;
    cfg.exec_command = "cat";
    cfg.sha256_rounds = 1;
    for (const auto name : tw::builtin_handler_names()) {
        cfg.handler = std::string(name);
        const auto h = tw::make_builtin_handler(cfg);
        const auto r = run_bounded(h, context("abc"));
        EXPECT_EQ(r.outcome(), kind::ok) << name;
    }
}
