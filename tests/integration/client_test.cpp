// The `taskvent` client as a user meets it: a bad task line is named and nothing is
// submitted; a ventilator that is not there is reported within the timeout, not waited on
// forever.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <string>

#include "pipeline.hpp"
#include "process.hpp"
#include "raw_peer.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;

void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : lines) {
        out << l << '\n';
    }
    ASSERT_TRUE(out.good()) << path;
}

TEST(client, malformed_task_line_is_named_and_nothing_is_submitted) {
    temp_dir dir;
    pipeline_options opts;
    opts.workers = 1;
    pipeline p(dir.path(), opts);
    const std::string good1 = R"({"key":"k1","payload":"one"})";
    const std::string good2 = R"({"key":"k2","payload":"two"})";
    struct bad_case {
        std::string name;
        std::string line;
    };
    const std::vector<bad_case> cases = {
        {"broken_json", R"({"key":"k3","payload":)"},
        {"no_payload", R"({"key":"k3"})"},
        {"key_not_a_string", R"({"key":3,"payload":"three"})"},
        {"not_an_object", R"(["k3","three"])"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        const auto file = dir / (c.name + ".jsonl");
        // The bad line is the third: lines before it must not have been sent either.
        write_lines(file, {good1, good2, c.line, good1});
        const auto r = p.submit(file, {"--timeout-ms", "5000"}, 30s);
        EXPECT_FALSE(r.status.success()) << r.out << r.err;
        EXPECT_NE(r.err.find(file.string() + ":3"), std::string::npos)
            << "the message should name " << file.string() << ":3; it was: " << r.err;
    }
    const auto status = p.status();
    EXPECT_EQ(status.value("submitted", std::uint64_t{99}), 0u) << status.dump();
    EXPECT_EQ(status.value("live", std::uint64_t{99}), 0u) << status.dump();
}

TEST(client, status_without_a_ventilator_fails_within_its_timeout) {
    temp_dir dir;
    const auto endpoint = "tcp://127.0.0.1:" + std::to_string(unused_loopback_port());
    for (const std::vector<std::string>& extra : {std::vector<std::string>{"--json"},
                                                  std::vector<std::string>{"--ping"},
                                                  std::vector<std::string>{}}) {
        std::vector<std::string> args = {"status", "--control", endpoint, "--timeout-ms", "1000"};
        args.insert(args.end(), extra.begin(), extra.end());
        const auto r = run_command(dir.path(), "status", program_path("taskvent"), args, 30s);
        EXPECT_FALSE(r.status.success()) << r.out << r.err;
        EXPECT_TRUE(r.status.exited) << r.status.describe();
        // The timeout plus start-up and shutdown, with room for a loaded machine.
        EXPECT_LT(r.elapsed, 6s) << "took " << r.elapsed.count() << " ms";
        EXPECT_GE(r.elapsed, 900ms) << "gave up before its own timeout";
        EXPECT_NE(r.err.find(endpoint), std::string::npos)
            << "the message should name the endpoint; it was: " << r.err;
        EXPECT_TRUE(r.out.empty()) << "nothing on stdout when there is no answer: " << r.out;
    }
}

TEST(client, submit_without_a_ventilator_fails_within_its_timeout) {
    temp_dir dir;
    const auto endpoint = "tcp://127.0.0.1:" + std::to_string(unused_loopback_port());
    const auto tasks = write_workload(dir / "tasks.jsonl", 10);
    const auto r = run_command(dir.path(),
                               "submit",
                               program_path("taskvent"),
                               {"submit",
                                tasks.path.string(),
                                "--control",
                                endpoint,
                                "--timeout-ms",
                                "1000",
                                "--retries",
                                "1"},
                               30s);
    EXPECT_FALSE(r.status.success()) << r.out << r.err;
    EXPECT_TRUE(r.status.exited) << r.status.describe();
    // Two attempts of 1 s each, plus start-up and shutdown.
    EXPECT_LT(r.elapsed, 8s) << "took " << r.elapsed.count() << " ms";
    EXPECT_GE(r.elapsed, 1900ms) << "gave up before two attempts of its own timeout";
    EXPECT_NE(r.err.find(endpoint), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("0 of 10"), std::string::npos)
        << "the message should say how much was acknowledged: " << r.err;
}

}  // namespace
}  // namespace taskvent::testing
