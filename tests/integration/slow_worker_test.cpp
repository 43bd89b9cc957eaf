// A worker a hundred times slower than the others never holds more than the credit it
// granted: the ventilator sends it work only as it frees slots, so it cannot sit on a share
// of the queue (as PUSH round robin would make it) and the batch ends about when the fast
// workers are done with it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

TEST(slow_worker, holds_no_more_than_its_credit_and_takes_only_what_it_can_run) {
    temp_dir dir;
    constexpr std::size_t n = 20000;
    constexpr std::uint32_t concurrency = 4, prefetch = 8;
    constexpr auto credit = concurrency + prefetch;
    constexpr int fast_ms = 2, slow_ms = 200;
    // Payloads are not numbers, so each worker's --sleep-ms sets how long a task takes it.
    const auto tasks = write_workload(dir / "tasks.jsonl", n);
    pipeline_options opts;
    opts.workers = 0;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    opts.worker.handler = "sleep";
    opts.worker.concurrency = concurrency;
    opts.worker.extra_flags = {"--prefetch", std::to_string(prefetch)};
    pipeline p(dir.path(), opts);
    for (int i = 0; i < 3; ++i) {
        p.add_worker({"--sleep-ms", std::to_string(fast_ms)});
    }
    p.add_worker({"--sleep-ms", std::to_string(slow_ms)});
    const auto slow_name = "w3";  // the pipeline names workers w<start order>
    p.wait_for_status([](const auto& s) { return count_of(s, "workers_alive") >= 4; },
                      "4 workers registered",
                      30s);

    const auto started = steady::now();
    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();

    // Watch what the ventilator has leased to the slow worker for the whole run.
    std::uint64_t slow_held_max = 0, samples = 0;
    const auto deadline = steady::now() + 120s;
    while (p.sink().running()) {
        ASSERT_LT(steady::now(), deadline) << "run did not finish\n" << p.diagnostics();
        const auto s = p.status();
        for (const auto& w : s.value("workers", nlohmann::json::array())) {
            if (w.value("name", std::string()) == slow_name) {
                slow_held_max = std::max(slow_held_max, w.value("held", std::uint64_t{0}));
                ++samples;
            }
        }
        std::this_thread::sleep_for(20ms);  // paces the sampling only
    }
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started);

    const auto sink_end = p.wait_for_sink_exit(60s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    std::size_t by_slow = 0;
    const auto r = check_results(tasks, p.output_path(), [&](std::size_t, const auto& rec) {
        by_slow += rec.value("worker", std::string()) == slow_name ? 1 : 0;
        return rec.value("status", std::string()) == "ok";
    });
    // What three fast workers alone would need, for the figures line (not asserted).
    const auto fast_only_ms = n * fast_ms / (3 * concurrency);
    std::cout << "[ figures  ] tasks=" << n << " run_ms=" << took.count()
              << " fast_workers_alone_ms~" << fast_only_ms << " slow_held_max=" << slow_held_max
              << " credit=" << credit << " samples=" << samples << " by_slow=" << by_slow << ' '
              << r.summary() << '\n';

    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    ASSERT_GT(samples, 0u) << "the slow worker never showed in status";
    EXPECT_GT(slow_held_max, 0u) << "the slow worker was never given work";
    EXPECT_LE(slow_held_max, credit);
    // An even share would be n/4; held to its credit it can only finish a sliver.
    EXPECT_LT(by_slow, n / 20) << "the slow worker was given far more than it could run";
}

}  // namespace
}  // namespace taskvent::testing
