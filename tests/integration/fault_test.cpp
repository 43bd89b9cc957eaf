// Faults the promise must survive: workers killed with SIGKILL while they hold tasks, and a
// worker paused (SIGSTOP) past the liveness window and then resumed. Either way every task
// ends in exactly one record; what was held by the lost worker is reissued, and results
// that arrive twice are dropped by the sink.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

void expect_exactly_once(const results_check& r, std::size_t n) {
    EXPECT_EQ(r.lost, 0u) << r.summary();
    EXPECT_EQ(r.unexpected, 0u) << r.summary();
    EXPECT_EQ(r.duplicated, 0u) << r.summary();
    EXPECT_EQ(r.duplicate_ids, 0u) << r.summary();
    EXPECT_EQ(r.malformed, 0u) << r.summary();
    EXPECT_EQ(r.records, n) << r.summary();
    EXPECT_EQ(r.ok, n) << "sleep tasks cannot fail; " << r.summary();
}

TEST(fault, killed_workers_lose_and_duplicate_nothing) {
    temp_dir dir;
    constexpr std::size_t n = 50000;
    // 3 ms tasks on 4 workers x 8 slots: several seconds of work, so the kills land while
    // workers hold running, prefetched and reported-but-unconfirmed tasks.
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [](std::size_t) { return "3"; });
    pipeline_options opts;
    opts.workers = 4;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    opts.heartbeat_liveness = 3;
    // Results a killed worker had queued but not sent come back after this.
    opts.confirm_timeout_ms = 2000;
    opts.worker.handler = "sleep";
    opts.worker.concurrency = 8;
    pipeline p(dir.path(), opts);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();

    const auto seed = std::random_device{}();
    std::cout << "[ seed     ] " << seed << '\n';
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pause_ms(200, 500);
    int kills = 0;
    const auto deadline = steady::now() + 240s;
    while (p.sink().running()) {
        // Paces the kills; the loop's end condition is the sink exiting, not this sleep.
        std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
        if (!p.sink().running()) {
            break;
        }
        ASSERT_LT(steady::now(), deadline)
            << "run did not finish under kills; status " << p.status().dump() << '\n'
            << p.diagnostics();
        auto live = p.live_workers();
        ASSERT_FALSE(live.empty()) << "every worker exited by itself\n" << p.diagnostics();
        std::uniform_int_distribution<std::size_t> pick(0, live.size() - 1);
        live[pick(rng)]->kill_and_reap();
        ++kills;
        p.add_worker();
    }

    const auto sink_end = p.wait_for_sink_exit(60s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path());
    std::cout << "[ figures  ] tasks=" << n << " kills=" << kills
              << " reissued=" << count_of(status, "reissued")
              << " workers_dead=" << count_of(status, "workers_dead")
              << " confirm_timeouts=" << count_of(status, "confirm_timeouts")
              << " duplicates_dropped=" << count_of(stats, "duplicates") << '\n';

    expect_exactly_once(r, n);
    EXPECT_GT(kills, 0);
    EXPECT_GT(count_of(status, "reissued"), 0u)
        << "no kill hit a worker holding tasks; " << status.dump();
    EXPECT_GE(count_of(status, "workers_dead"), 1u) << status.dump();
}

TEST(fault, stopped_worker_is_declared_dead_and_its_tasks_reissued) {
    temp_dir dir;
    constexpr std::size_t n = 160;
    // 200 ms tasks: the victim holds running and prefetched tasks the whole time it is
    // stopped. Liveness window = 200 ms x 3.
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [](std::size_t) { return "200"; });
    pipeline_options opts;
    opts.workers = 2;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    opts.heartbeat_liveness = 3;
    opts.worker.handler = "sleep";
    opts.worker.concurrency = 4;
    pipeline p(dir.path(), opts);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();
    // Once a task is done both workers have had their credit filled: with 160 tasks queued
    // and 2 x (4 + prefetch) credit, neither can be idle.
    p.wait_for_status(
        [](const auto& s) { return count_of(s, "done") >= 1; }, "a first task done", 30s);

    auto& victim = *p.workers().front();
    victim.signal(SIGSTOP);
    const auto stopped_at = steady::now();
    const auto dead =
        p.wait_for_status([](const auto& s) { return count_of(s, "workers_dead") >= 1; },
                          "the stopped worker declared dead",
                          30s);
    const auto stopped_for =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - stopped_at);
    victim.signal(SIGCONT);

    const auto sink_end = p.wait_for_sink_exit(120s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path());
    std::cout << "[ figures  ] tasks=" << n << " stopped_ms=" << stopped_for.count()
              << " reissued_when_declared_dead=" << count_of(dead, "reissued")
              << " reissued=" << count_of(status, "reissued")
              << " workers_dead=" << count_of(status, "workers_dead")
              << " duplicates_dropped=" << count_of(stats, "duplicates") << '\n';

    expect_exactly_once(r, n);
    EXPECT_GT(count_of(status, "reissued"), 0u) << status.dump();
    // Paused is not dead: once resumed it registers again and keeps serving.
    EXPECT_TRUE(victim.running()) << "the resumed worker exited: "
                                  << (victim.status() ? victim.status()->describe() : "") << '\n'
                                  << victim.log_tail(30);
}

}  // namespace
}  // namespace taskvent::testing
