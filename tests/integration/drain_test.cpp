// Scale-down as Swarm does it: SIGTERM to some workers in the middle of a run. A draining
// worker hands back what it has not started (not charged an attempt), finishes what it
// runs, says bye and exits 0; nothing is lost, and with tasks shorter than the drain
// timeout nothing needs to be reissued at all.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <optional>

#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

TEST(drain, sigterm_to_half_of_the_workers_loses_nothing_and_reissues_nothing) {
    temp_dir dir;
    constexpr std::size_t n = 20000;
    // 5 ms tasks on 4 workers x 4 slots: several seconds of work, so the drain lands while
    // every worker holds running and prefetched tasks; 5 ms is far inside the drain timeout.
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [](std::size_t) { return "5"; });
    pipeline_options opts;
    opts.workers = 4;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    opts.worker.handler = "sleep";
    opts.worker.concurrency = 4;
    opts.worker.extra_flags = {"--drain-timeout-ms", "20000"};
    pipeline p(dir.path(), opts);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();
    p.wait_for_status([](const auto& s) { return count_of(s, "done") >= n / 5; },
                      "a fifth of the tasks done",
                      60s);

    std::vector<child_process*> leaving = {p.workers()[0].get(), p.workers()[1].get()};
    for (auto* w : leaving) {
        w->signal(SIGTERM);
    }
    const auto term_at = steady::now();
    for (auto* w : leaving) {
        const auto end = w->wait_for_exit(30s);
        ASSERT_TRUE(end.has_value()) << w->name() << " did not drain in 30 s\n" << p.diagnostics();
        EXPECT_TRUE(end->success()) << w->name() << ": " << end->describe() << '\n'
                                    << w->log_tail(20);
    }
    const auto drained_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - term_at).count();
    const auto after_drain = p.status();

    const auto sink_end = p.wait_for_sink_exit(120s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    const auto status = p.status();
    const auto stats = p.sink_stats();
    std::size_t charged_twice = 0;
    const auto r = check_results(tasks, p.output_path(), [&](std::size_t, const auto& rec) {
        // A task handed back unstarted must not have been charged for its first delivery.
        if (rec.value("attempts", 0) != 1) {
            ++charged_twice;
        }
        return true;
    });
    std::cout << "[ figures  ] tasks=" << n << " drained_in_ms=" << drained_ms
              << " done_at_drain=" << count_of(after_drain, "done")
              << " returned=" << count_of(status, "returned")
              << " reissued=" << count_of(status, "reissued")
              << " workers_dead=" << count_of(status, "workers_dead")
              << " confirm_timeouts=" << count_of(status, "confirm_timeouts")
              << " duplicates_dropped=" << count_of(stats, "duplicates") << ' ' << r.summary()
              << '\n';

    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    EXPECT_EQ(charged_twice, 0u) << "records with attempts != 1";
    EXPECT_GT(count_of(status, "returned"), 0u)
        << "the draining workers handed nothing back: the drain did not land mid-run; "
        << status.dump();
    EXPECT_EQ(count_of(status, "reissued"), 0u) << status.dump();
    EXPECT_EQ(count_of(status, "workers_dead"), 0u) << status.dump();
    EXPECT_EQ(count_of(status, "confirm_timeouts"), 0u) << status.dump();
    EXPECT_EQ(count_of(stats, "duplicates"), 0u) << stats.dump();
    // The ones that stayed finished the batch.
    EXPECT_EQ(p.live_workers().size(), 2u) << p.diagnostics();
}

}  // namespace
}  // namespace taskvent::testing
