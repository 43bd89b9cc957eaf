// The promise on a healthy run: a ventilator, a sink and four echo workers on loopback turn
// 100,000 submitted tasks into exactly one `ok` record each, with the payload echoed back.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>

#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;

TEST(pipeline, delivers_every_task_exactly_once) {
    temp_dir dir;
    constexpr std::size_t n = 100000;
    const auto tasks = write_workload(dir / "tasks.jsonl", n);
    pipeline_options opts;
    opts.workers = 4;
    opts.expect = n;
    pipeline p(dir.path(), opts);

    const auto start = std::chrono::steady_clock::now();
    const auto sub = p.submit(tasks.path, {"--wait", "--wait-timeout-ms", "240000"}, 250s);
    ASSERT_TRUE(sub.status.success()) << "submit: " << sub.status.describe() << '\n'
                                      << sub.out << sub.err << p.diagnostics();
    const auto sink_end = p.wait_for_sink_exit(60s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(sink_end.success()) << "sink: " << sink_end.describe() << '\n' << p.diagnostics();

    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path(), [](std::size_t i, const auto& record) {
        return record.value("status", "") != "ok" ||
               record.value("result", "") == "task " + std::to_string(i);
    });
    std::cout << "[ figures  ] tasks=" << n << " seconds=" << secs
              << " tasks_per_s=" << static_cast<double>(n) / secs << ' ' << r.summary()
              << " sink_duplicates=" << stats.value("duplicates", -1)
              << " reissued=" << status.value("reissued", -1) << '\n';

    EXPECT_EQ(r.records, n) << r.summary();
    EXPECT_EQ(r.lost, 0u) << r.summary();
    EXPECT_EQ(r.unexpected, 0u) << r.summary();
    EXPECT_EQ(r.duplicated, 0u) << r.summary();
    EXPECT_EQ(r.duplicate_ids, 0u) << r.summary();
    EXPECT_EQ(r.malformed, 0u) << r.summary();
    EXPECT_EQ(r.rejected, 0u) << "echo results that are not their payload; " << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    EXPECT_EQ(stats.value("recorded", 0ULL), n) << stats.dump();
    EXPECT_EQ(status.value("submitted", 0ULL), n) << status.dump();
    EXPECT_EQ(status.value("done", 0ULL), n) << status.dump();

    // The user's own checker must agree with the harness's.
    const auto check = run_command(
        dir.path(),
        "check",
        program_path("taskvent"),
        {"check", "--tasks", tasks.path.string(), "--results", p.output_path().string()},
        60s);
    EXPECT_TRUE(check.status.success()) << check.out << check.err;
    EXPECT_NE(check.out.find("lost=0 unexpected=0 duplicated=0"), std::string::npos) << check.out;
}

}  // namespace
}  // namespace taskvent::testing
