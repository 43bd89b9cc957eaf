// Tasks that break their worker: a poison task whose handler kills the worker process, and
// a hung handler that never returns. A poison task is charged only where it was running,
// ends `dead` after exactly max_attempts worker deaths, and takes no more workers down than
// that; a hung handler is cut off at --task-timeout-ms with its process group, and the
// worker goes on serving.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <thread>

#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// Pids of processes whose command line holds `marker`, read from /proc: what a hung
/// handler's process group would leave behind. Only read, never signalled.
std::set<int> processes_with(const std::string& marker) {
    std::set<int> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const auto name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream in(entry.path() / "cmdline", std::ios::binary);
        const std::string cmdline((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
        if (cmdline.find(marker) != std::string::npos) {
            found.insert(std::stoi(name));
        }
    }
    return found;
}

TEST(poison, a_task_that_kills_its_worker_is_dead_after_max_attempts_deaths) {
    temp_dir dir;
    constexpr std::size_t good = 10000;
    constexpr std::uint32_t max_attempts = 3;
    const std::set<std::size_t> poison_at = {1500, 5000, 8500};
    const auto n = good + poison_at.size();
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [&](std::size_t i) {
        return poison_at.contains(i) ? std::string("poison") : "task " + std::to_string(i);
    });
    pipeline_options opts;
    opts.workers = 4;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    opts.heartbeat_liveness = 3;
    opts.ventilator_flags = {"--max-attempts", std::to_string(max_attempts)};
    opts.worker.handler = "exec";
    // One task at a time: a death is then always the doing of the one poison task running,
    // and every other task the dead worker held was only prefetched (never charged).
    opts.worker.concurrency = 1;
    // $PPID of the shell is the worker. SIGKILL takes effect before `kill` returns.
    opts.worker.extra_flags = {
        "--exec-command",
        R"(p=$(cat); if [ "$p" = poison ]; then kill -9 $PPID; exit 1; fi; printf %s "$p")"};
    pipeline p(dir.path(), opts);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();

    // Keep four workers running: each one the poison kills is replaced, as Swarm would.
    std::size_t deaths = 0, other_exits = 0;
    std::string other_exit_logs;
    std::set<child_process*> counted;
    const auto deadline = steady::now() + 180s;
    while (p.sink().running()) {
        ASSERT_LT(steady::now(), deadline)
            << "run did not finish; status " << p.status().dump() << '\n'
            << p.diagnostics();
        for (auto& w : p.workers()) {
            if (counted.contains(w.get()) || w->running()) {
                continue;
            }
            counted.insert(w.get());
            if (!w->status()->exited && w->status()->signal == SIGKILL) {
                ++deaths;
            } else {
                ++other_exits;
                other_exit_logs += w->name() + ": " + w->status()->describe() + '\n';
            }
        }
        while (p.live_workers().size() < 4) {
            p.add_worker();
        }
        // Paces the check; the loop ends when the sink has every record.
        std::this_thread::sleep_for(50ms);
    }

    const auto sink_end = p.wait_for_sink_exit(60s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    const auto status = p.status();
    std::size_t poison_ok = 0, good_charged = 0;
    const auto r = check_results(tasks, p.output_path(), [&](std::size_t i, const auto& rec) {
        const auto st = rec.value("status", std::string());
        const auto attempts = rec.value("attempts", 0u);
        if (!poison_at.contains(i)) {
            // Good tasks only ever sat in a dying worker's prefetch: never charged.
            good_charged += attempts != 1 ? 1 : 0;
            return st == "ok";
        }
        const auto error = rec.value("error", std::string());
        poison_ok += st == "dead" && attempts == max_attempts &&
                             error.find("worker died while running") != std::string::npos
                         ? 1
                         : 0;
        return st == "dead";
    });
    std::cout << "[ figures  ] tasks=" << n << " poison=" << poison_at.size()
              << " max_attempts=" << max_attempts << " worker_deaths=" << deaths
              << " workers_dead=" << count_of(status, "workers_dead")
              << " reissued=" << count_of(status, "reissued")
              << " workers_started=" << p.workers().size() << ' ' << r.summary() << '\n';

    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.ok, good) << r.summary();
    EXPECT_EQ(r.dead, poison_at.size()) << r.summary();
    EXPECT_EQ(poison_ok, poison_at.size()) << "every poison record: dead, attempts=" << max_attempts
                                           << ", error 'worker died while running'";
    EXPECT_EQ(good_charged, 0u) << "good tasks charged an attempt they never ran";
    EXPECT_EQ(deaths, poison_at.size() * max_attempts) << "workers killed";
    EXPECT_EQ(other_exits, 0u) << other_exit_logs;
    EXPECT_EQ(count_of(status, "workers_dead"), deaths) << status.dump();
}

TEST(poison, a_hung_handler_is_cut_off_at_the_task_timeout_and_the_worker_serves_on) {
    temp_dir dir;
    constexpr std::size_t good = 400;
    const std::set<std::size_t> hang_at = {10, 200, 390};
    const auto n = good + hang_at.size();
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [&](std::size_t i) {
        return hang_at.contains(i) ? std::string("hang") : "task " + std::to_string(i);
    });
    // A sleep whose argument is unique to this test (GNU sleep takes fractions): the shell
    // and the sleep of a process group left behind both show it in /proc.
    const auto marker = "1000." + std::to_string(::getpid());
    pipeline_options opts;
    opts.workers = 2;
    opts.expect = n;
    opts.ventilator_flags = {"--max-attempts", "2", "--backoff-base-ms", "50"};
    opts.worker.handler = "exec";
    opts.worker.concurrency = 2;
    opts.worker.extra_flags = {
        "--task-timeout-ms",
        "500",
        "--exec-command",
        R"(p=$(cat); if [ "$p" = hang ]; then sleep )" + marker + R"(; fi; printf %s "$p")"};
    pipeline p(dir.path(), opts);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();
    const auto sink_end = p.wait_for_sink_exit(120s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();

    const auto status = p.status();
    std::size_t timed_out = 0;
    const auto r = check_results(tasks, p.output_path(), [&](std::size_t i, const auto& rec) {
        const auto st = rec.value("status", std::string());
        if (!hang_at.contains(i)) {
            return st == "ok";
        }
        timed_out += rec.value("error", std::string()).find("timed out") != std::string::npos;
        return st == "dead" || st == "failed";
    });
    // The workers' own command lines hold the marker too (in --exec-command).
    const auto leftovers = [&] {
        auto found = processes_with(marker);
        for (auto& w : p.workers()) {
            found.erase(w->pid());
        }
        return found;
    };
    // The kill of a process group is asynchronous: give the kernel a moment to reap.
    auto left = leftovers();
    for (int i = 0; i < 100 && !left.empty(); ++i) {
        std::this_thread::sleep_for(100ms);
        left = leftovers();
    }
    std::cout << "[ figures  ] tasks=" << n << " hung=" << hang_at.size()
              << " timed_out_records=" << timed_out << " retried=" << count_of(status, "retried")
              << " workers_dead=" << count_of(status, "workers_dead")
              << " processes_left=" << left.size() << ' ' << r.summary() << '\n';

    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.ok, good) << r.summary();
    EXPECT_EQ(timed_out, hang_at.size()) << "each hung task's record names the timeout";
    EXPECT_EQ(count_of(status, "workers_dead"), 0u) << "a hung handler made its worker look dead";
    EXPECT_EQ(p.live_workers().size(), 2u) << p.diagnostics();
    EXPECT_TRUE(left.empty()) << left.size() << " hung handler processes outlived their timeout";
}

}  // namespace
}  // namespace taskvent::testing
