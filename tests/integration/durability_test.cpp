// Durability (DESIGN §5): a ventilator with a journal and a sink with its output file are
// SIGKILLed and started again on the same endpoints and files, and nothing is lost or
// recorded twice. Also: a submit cut off by a ventilator kill is accepted exactly once after
// the restart, a journal past its compaction threshold shrinks without losing a live task,
// and a restart after a compaction gives out no task id the sink has already recorded.
// Each test grades the sink's output like a queue checker: every task exactly once, nothing
// unexpected, the duplicates the sink dropped counted and printed.
//
// The programs that are restarted bind fixed loopback ports chosen free for the test: the
// workers and the sink reconnect to the address they knew, so a restart on `:*` would strand
// them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pipeline.hpp"
#include "process.hpp"
#include "raw_peer.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
namespace fs = std::filesystem;

/// Generous: a loaded 2-core machine replaying a journal or reading back a results file
/// must not fail a test.
constexpr auto ready_timeout = 30s;

std::uint64_t journal_field(const nlohmann::json& status, const char* key) {
    const auto it = status.find("journal");
    return it != status.end() && it->is_object() ? it->value(key, std::uint64_t{0}) : 0;
}

std::string loopback(std::uint16_t port) {
    return fmt::format("tcp://127.0.0.1:{}", port);
}

/// The kernel's range of ports for outgoing connections; empty when it cannot be read.
std::optional<std::pair<int, int>> ephemeral_port_range() {
    std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
    int low = 0;
    int high = 0;
    if (!(in >> low >> high) || low <= 0 || high < low) {
        return std::nullopt;
    }
    return std::pair{low, high};
}

/// True when nothing is bound to 127.0.0.1:`port`.
bool loopback_port_free(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool free = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return free;
}

/// `n` distinct loopback ports that are free now and that a restarted program can bind
/// again. They are taken below the kernel's ephemeral range when it leaves room: while a
/// program is down, its peers keep connecting to its port, and an outgoing connection given
/// that very port as its own (or connected to itself) would keep the restart from binding.
std::vector<std::uint16_t> fixed_ports(std::size_t n) {
    std::set<std::uint16_t> ports;
    const auto range = ephemeral_port_range();
    if (range && range->first > 20000) {
        std::mt19937 rng(std::random_device{}());
        std::uniform_int_distribution<int> pick(10000, range->first - 1);
        for (int tries = 0; ports.size() < n && tries < 1000; ++tries) {
            const auto port = static_cast<std::uint16_t>(pick(rng));
            if (loopback_port_free(port)) {
                ports.insert(port);
            }
        }
    }
    while (ports.size() < n) {
        ports.insert(unused_loopback_port());
    }
    return {ports.begin(), ports.end()};
}

std::uint64_t bytes_on_disk(const fs::path& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

/// Polls `pred` until it holds or `timeout` passes; returns whether it held.
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout,
                std::chrono::milliseconds every = 20ms) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
        if (pred()) {
            return true;
        }
        if (steady::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(every);
    }
}

/// Sum, over the lines of `log` that contain `marker`, of the number after `field`
/// (e.g. " count="). spdlog flushes every line, so a SIGKILLed program's log is complete.
std::uint64_t sum_logged(const fs::path& log, std::string_view marker, std::string_view field) {
    std::ifstream in(log);
    std::uint64_t sum = 0;
    std::string line;
    while (std::getline(in, line)) {
        if (line.find(marker) == std::string::npos) {
            continue;
        }
        if (const auto at = line.find(field); at != std::string::npos) {
            sum += std::strtoull(line.c_str() + at + field.size(), nullptr, 10);
        }
    }
    return sum;
}

/// `taskvent status --json`; empty when the ventilator does not answer (it may be down).
std::optional<nlohmann::json> try_status(const fs::path& dir, const std::string& control) {
    const auto r = run_command(dir,
                               "status",
                               program_path("taskvent"),
                               {"status", "--json", "--control", control, "--timeout-ms", "2000"},
                               20s);
    if (!r.status.success()) {
        return std::nullopt;
    }
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_object()) {
        return std::nullopt;
    }
    return j;
}

/// One program that a test kills and starts again with the same endpoints and files. Each
/// start is an incarnation with its own log and ready file, so a stale ready file is never
/// taken for the new process's, and every incarnation's log can be read back for figures.
/// The current incarnation is killed and reaped by the destructor (child_process's).
class restartable {
  public:
    /// The program's arguments for incarnation `n` (1, 2, ...), without --ready-file.
    using args_for = std::function<std::vector<std::string>(int n)>;

    restartable(fs::path dir,
                std::string program,
                std::vector<std::string> ready_keys,
                args_for args)
        : dir_(std::move(dir)),
          program_(std::move(program)),
          ready_keys_(std::move(ready_keys)),
          args_(std::move(args)) {}

    /// Starts the next incarnation and returns once it has bound (written its ready file).
    child_process& start() {
        const int n = ++incarnations_;
        const auto ready = dir_ / fmt::format("{}-{}.ready", program_, n);
        spawn_options so;
        so.program = program_path(program_);
        so.args = args_(n);
        so.args.push_back("--ready-file");
        so.args.push_back(ready.string());
        so.stdout_path = log_path(n);
        current_ = std::make_unique<child_process>(std::move(so));
        read_ready_file(ready, ready_keys_, *current_, ready_timeout);
        return *current_;
    }

    /// SIGKILL and reap the current incarnation.
    void kill() {
        current_->kill_and_reap();
        ++kills_;
    }

    child_process& process() { return *current_; }
    int incarnations() const { return incarnations_; }
    int kills() const { return kills_; }
    fs::path log_path(int n) const { return dir_ / fmt::format("{}-{}.log", program_, n); }

    /// sum_logged over the logs of every incarnation.
    std::uint64_t sum_logged_all(std::string_view marker, std::string_view field) const {
        std::uint64_t sum = 0;
        for (int n = 1; n <= incarnations_; ++n) {
            sum += sum_logged(log_path(n), marker, field);
        }
        return sum;
    }

    /// The numbers after `field` in lines with `marker`, one per incarnation.
    std::vector<std::uint64_t> logged_per_incarnation(std::string_view marker,
                                                      std::string_view field) const {
        std::vector<std::uint64_t> out;
        for (int n = 1; n <= incarnations_; ++n) {
            out.push_back(sum_logged(log_path(n), marker, field));
        }
        return out;
    }

    /// The last lines of every incarnation's log: for failure messages.
    std::string logs(std::size_t lines = 15) const {
        std::string out;
        for (int n = 1; n <= incarnations_; ++n) {
            out += fmt::format("--- {} incarnation {} ({})\n", program_, n, log_path(n).string());
            out += file_tail(log_path(n), lines);
        }
        return out;
    }

  private:
    fs::path dir_;
    std::string program_;
    std::vector<std::string> ready_keys_;
    args_for args_;
    std::unique_ptr<child_process> current_;
    int incarnations_ = 0;
    int kills_ = 0;
};

/// The ventilator as a restartable program: fixed endpoints, one journal for all its lives.
restartable make_ventilator(const fs::path& dir,
                            const std::string& workers_ep,
                            const std::string& control_ep,
                            const fs::path& journal,
                            std::vector<std::string> extra = {}) {
    return restartable(dir, "ventilator", {"workers", "control"}, [=](int) {
        std::vector<std::string> args = {"--workers-bind",
                                         workers_ep,
                                         "--control-bind",
                                         control_ep,
                                         "--heartbeat-interval-ms",
                                         "200",
                                         "--heartbeat-liveness",
                                         "3",
                                         "--confirm-timeout-ms",
                                         "2000",
                                         "--journal",
                                         journal.string(),
                                         "--log-level",
                                         "info"};
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    });
}

/// The sink as a restartable program: fixed results endpoint, one output for all its lives,
/// a stats file per incarnation. Debug logs name every batch of duplicates it drops, which
/// is the only count a SIGKILLed sink leaves behind.
restartable make_sink(const fs::path& dir,
                      const std::string& results_ep,
                      const std::string& control_ep,
                      const fs::path& output,
                      std::uint64_t expect) {
    return restartable(dir, "sink", {"results"}, [=](int n) {
        return std::vector<std::string>{"--results-bind",
                                        results_ep,
                                        "--control",
                                        control_ep,
                                        "--output",
                                        output.string(),
                                        "--expect",
                                        std::to_string(expect),
                                        "--stats-file",
                                        (dir / fmt::format("sink-stats-{}.json", n)).string(),
                                        "--log-level",
                                        "debug"};
    });
}

/// Duplicates the sink dropped, summed over its incarnations' logs.
std::uint64_t duplicates_dropped(const restartable& sink) {
    return sink.sum_logged_all("dropped duplicate results", " count=");
}

/// The stats file of the sink's last incarnation (which exited by itself) must say it has
/// every task, and agree with its log on the duplicates: the same count the figures sum.
void expect_final_sink_stats(const restartable& sink, const fs::path& dir, std::uint64_t n) {
    const auto last = sink.incarnations();
    const auto path = dir / fmt::format("sink-stats-{}.json", last);
    const auto stats = nlohmann::json::parse(read_file(path), nullptr, false);
    ASSERT_TRUE(stats.is_object()) << path;
    EXPECT_EQ(count_of(stats, "recorded"), n) << stats.dump();
    EXPECT_EQ(count_of(stats, "duplicates"),
              sum_logged(sink.log_path(last), "dropped duplicate results", " count="))
        << stats.dump();
}

/// A worker that reconnects quickly after the ventilator comes back.
std::unique_ptr<child_process> start_worker(const fs::path& dir,
                                            int n,
                                            const std::string& workers_ep,
                                            const std::string& results_ep,
                                            const worker_options& w) {
    spawn_options so;
    so.program = program_path("worker");
    so.args = {"--ventilator",
               workers_ep,
               "--sink",
               results_ep,
               "--handler",
               w.handler,
               "--concurrency",
               std::to_string(w.concurrency),
               "--reconnect-min-ms",
               "100",
               "--reconnect-max-ms",
               "1000",
               "--name",
               "w" + std::to_string(n),
               "--log-level",
               "info"};
    so.args.insert(so.args.end(), w.extra_flags.begin(), w.extra_flags.end());
    so.stdout_path = dir / fmt::format("worker-{}.log", n);
    return std::make_unique<child_process>(std::move(so));
}

/// `taskvent submit` running in the background, so the test can kill things meanwhile.
std::unique_ptr<child_process> start_submit(const fs::path& dir,
                                            const std::string& tag,
                                            const fs::path& tasks,
                                            const std::string& control_ep,
                                            std::vector<std::string> extra) {
    spawn_options so;
    so.program = program_path("taskvent");
    so.args = {"submit", tasks.string(), "--control", control_ep};
    so.args.insert(so.args.end(), extra.begin(), extra.end());
    so.stdout_path = dir / (tag + ".out");
    so.stderr_path = dir / (tag + ".err");
    return std::make_unique<child_process>(std::move(so));
}

/// The number after `field` in `text` (e.g. submit's "accepted tasks=N"), or -1.
long long field_in(const std::string& text, std::string_view field) {
    const auto at = text.find(field);
    return at == std::string::npos ? -1 : std::atoll(text.c_str() + at + field.size());
}

/// Counts the complete lines of the sink's output as it grows, across sink restarts. A
/// restarted sink only ever cuts a torn line after the last newline, which is never counted,
/// so the position kept here stays valid.
class output_lines {
  public:
    explicit output_lines(fs::path path) : path_(std::move(path)) {}

    std::uint64_t count() {
        std::ifstream in(path_, std::ios::binary);
        if (!in) {
            return lines_;
        }
        in.seekg(static_cast<std::streamoff>(offset_));
        std::array<char, 1 << 16> buf{};
        auto pos = offset_;
        while (in.read(buf.data(), buf.size()) || in.gcount() > 0) {
            const auto got = static_cast<std::size_t>(in.gcount());
            for (std::size_t i = 0; i < got; ++i) {
                if (buf[i] == '\n') {
                    ++lines_;
                    offset_ = pos + i + 1;
                }
            }
            pos += got;
        }
        return lines_;
    }

  private:
    fs::path path_;
    std::uint64_t offset_ = 0;
    std::uint64_t lines_ = 0;
};

/// What the user's own checker says; must agree with check_results.
void expect_taskvent_check_passes(const fs::path& dir,
                                  const fs::path& tasks,
                                  const fs::path& output) {
    const auto check =
        run_command(dir,
                    "check",
                    program_path("taskvent"),
                    {"check", "--tasks", tasks.string(), "--results", output.string()},
                    120s);
    EXPECT_TRUE(check.status.success()) << check.out << check.err;
    EXPECT_NE(check.out.find("lost=0 unexpected=0 duplicated=0"), std::string::npos) << check.out;
}

void expect_exactly_once(const results_check& r, std::size_t n) {
    EXPECT_EQ(r.lost, 0u) << r.summary();
    EXPECT_EQ(r.unexpected, 0u) << r.summary();
    EXPECT_EQ(r.duplicated, 0u) << r.summary();
    EXPECT_EQ(r.duplicate_ids, 0u) << r.summary();
    EXPECT_EQ(r.malformed, 0u) << r.summary();
    EXPECT_EQ(r.rejected, 0u) << "results that are not their task's; " << r.summary();
    EXPECT_EQ(r.records, n) << r.summary();
    EXPECT_EQ(r.ok, n) << "these tasks cannot fail; " << r.summary();
}

/// An echo result must be the payload it was given: proves the payload came through the
/// journal intact.
record_verifier echoes(const std::function<std::string(std::size_t)>& payload) {
    return [payload](std::size_t i, const nlohmann::json& record) {
        return record.value("result", std::string{}) == payload(i);
    };
}

TEST(durability, ventilator_and_sink_crashes_lose_nothing) {
    temp_dir dir;
    constexpr std::size_t n = 200000;
    // 1 ms sleeps on 4 workers x 4 slots: the run lasts ~20 s on a busy 2-core machine, so
    // five kills land well apart, each restarted ventilator replays a backlog of up to
    // 200,000 tasks, and workers hold running, prefetched and unconfirmed tasks at every
    // kill. sleep returns its payload.
    const auto payload = [](std::size_t) { return std::string("1"); };
    const auto tasks = write_workload(dir / "tasks.jsonl", n, payload);
    const auto ports = fixed_ports(3);
    const auto workers_ep = loopback(ports[0]);
    const auto control_ep = loopback(ports[1]);
    const auto results_ep = loopback(ports[2]);
    const auto output = dir / "results.jsonl";

    auto ventilator = make_ventilator(dir.path(), workers_ep, control_ep, dir / "journal");
    auto sink = make_sink(dir.path(), results_ep, control_ep, output, n);
    ventilator.start();
    sink.start();
    std::vector<std::unique_ptr<child_process>> workers;
    worker_options wopts;
    wopts.handler = "sleep";
    wopts.concurrency = 4;
    for (int i = 0; i < 4; ++i) {
        workers.push_back(start_worker(dir.path(), i, workers_ep, results_ep, wopts));
    }
    ASSERT_TRUE(wait_until(
        [&] {
            const auto s = try_status(dir.path(), control_ep);
            return s && count_of(*s, "workers_alive") >= 4;
        },
        ready_timeout))
        << ventilator.logs();

    // Three ventilator kills and two sink kills in a random order, each when the output has
    // reached a random point of its own fifth of 5%..85%: all land within the run, apart.
    const auto seed = std::random_device{}();
    std::cout << "[ seed     ] " << seed << '\n';
    std::mt19937 rng(seed);
    std::array<bool, 5> kill_ventilator = {true, true, true, false, false};
    std::shuffle(kill_ventilator.begin(), kill_ventilator.end(), rng);
    std::vector<std::uint64_t> at_records;
    for (std::size_t i = 0; i < kill_ventilator.size(); ++i) {
        const double slot = 0.80 / static_cast<double>(kill_ventilator.size());
        std::uniform_real_distribution<double> within(0.05 + slot * static_cast<double>(i),
                                                      0.05 + slot * static_cast<double>(i + 1));
        at_records.push_back(static_cast<std::uint64_t>(within(rng) * n));
    }
    std::uniform_int_distribution<int> down_ms(0, 300);

    const auto started = steady::now();
    // Small per-attempt timeout: a batch sent to a ventilator that then died is resent
    // soon after its successor is up; keys make the resend safe.
    auto submit = start_submit(
        dir.path(), "submit", tasks.path, control_ep, {"--timeout-ms", "1000", "--retries", "120"});

    output_lines progress(output);
    // Waits for the output to reach `records`, or for the sink to exit. A run that loses
    // tasks stalls for good, so it fails once the output has not grown for a long while
    // (longer than any recovery: liveness, reconnect backoff, confirm timeout, replay).
    auto wait_for_records = [&](std::uint64_t records) {
        auto seen = progress.count();
        auto grew_at = steady::now();
        return wait_until(
            [&] {
                const auto now_seen = progress.count();
                if (now_seen != seen) {
                    seen = now_seen;
                    grew_at = steady::now();
                }
                return now_seen >= records || !sink.process().running() ||
                       steady::now() - grew_at > 45s;
            },
            240s);
    };
    std::uint64_t reissued = 0;  // summed over the ventilator's incarnations
    std::string events;
    for (std::size_t i = 0; i < kill_ventilator.size(); ++i) {
        const bool waited = wait_for_records(at_records[i]);
        ASSERT_TRUE(waited && progress.count() >= at_records[i] && sink.process().running())
            << "the output did not reach " << at_records[i] << " records (has " << progress.count()
            << ") with the sink running; kills so far:" << events << '\n'
            << ventilator.logs() << sink.logs() << file_tail(dir / "submit.err", 10);
        if (kill_ventilator[i]) {
            // Its counters die with it: read them just before the kill.
            if (const auto s = try_status(dir.path(), control_ep)) {
                reissued += count_of(*s, "reissued");
            }
            ventilator.kill();
        } else {
            sink.kill();
        }
        events +=
            fmt::format(" {}@{}", kill_ventilator[i] ? "ventilator" : "sink", progress.count());
        // Paces the fault: the other programs notice the loss before the restart.
        std::this_thread::sleep_for(std::chrono::milliseconds(down_ms(rng)));
        ASSERT_NO_THROW(kill_ventilator[i] ? ventilator.start() : sink.start())
            << ventilator.logs() << sink.logs();
    }
    std::cout << "[ kills    ] at records:" << events << '\n';

    wait_for_records(n);
    const auto sink_end = sink.process().wait_for_exit(30s);
    const double secs = std::chrono::duration<double>(steady::now() - started).count();
    ASSERT_TRUE(sink_end.has_value())
        << "the sink did not record all " << n << " tasks; it has " << progress.count() << '\n'
        << ventilator.logs() << sink.logs();
    ASSERT_TRUE(sink_end->success()) << sink_end->describe() << '\n' << sink.logs();
    const auto sub_end = submit->wait_for_exit(60s);
    ASSERT_TRUE(sub_end && sub_end->success())
        << "submit: " << (sub_end ? sub_end->describe() : "still running") << '\n'
        << file_tail(dir / "submit.out", 5) << file_tail(dir / "submit.err", 10);
    const auto sub_out = read_file(dir / "submit.out");
    if (const auto s = try_status(dir.path(), control_ep)) {
        reissued += count_of(*s, "reissued");
    }

    const auto r = check_results(tasks, output, echoes(payload));
    const auto requeued = ventilator.logged_per_incarnation("journal replayed", " requeued=");
    std::string requeued_list;
    for (std::size_t i = 1; i < requeued.size(); ++i) {
        requeued_list += (i == 1 ? "" : ",") + std::to_string(requeued[i]);
    }
    std::cout << fmt::format(
        "[ figures  ] tasks={} ventilator_kills={} sink_kills={} reissued={} "
        "requeued_on_restart={} duplicates_dropped={} resent_batches={} seconds={:.1f}\n",
        n,
        ventilator.kills(),
        sink.kills(),
        reissued,
        requeued_list,
        duplicates_dropped(sink),
        field_in(sub_out, "resent_batches="),
        secs);

    expect_exactly_once(r, n);
    expect_final_sink_stats(sink, dir.path(), n);
    EXPECT_EQ(field_in(sub_out, "accepted tasks=") + field_in(sub_out, "duplicate_keys="),
              static_cast<long long>(n))
        << sub_out;
    EXPECT_EQ(ventilator.kills(), 3);
    EXPECT_EQ(sink.kills(), 2);
    expect_taskvent_check_passes(dir.path(), tasks.path, output);
}

TEST(durability, an_interrupted_submit_is_accepted_exactly_once) {
    temp_dir dir;
    constexpr std::size_t n = 100000;
    const auto payload = [](std::size_t i) { return "task " + std::to_string(i); };
    const auto tasks = write_workload(dir / "tasks.jsonl", n, payload);
    const auto ports = fixed_ports(2);
    const auto workers_ep = loopback(ports[0]);
    const auto control_ep = loopback(ports[1]);
    const auto journal = dir / "journal";

    auto ventilator = make_ventilator(dir.path(), workers_ep, control_ep, journal);
    ventilator.start();
    const auto empty_journal = bytes_on_disk(journal);

    auto submit = start_submit(
        dir.path(), "submit", tasks.path, control_ep, {"--timeout-ms", "1000", "--retries", "100"});
    // Kill once the journal holds a random part of the submission but surely not all of it
    // (an accept record here is about 47 bytes: 33 of framing and ids, key and payload),
    // a random moment later, so that the kill may find batches received and not yet
    // committed, committed and not yet acknowledged, or in flight.
    const auto seed = std::random_device{}();
    std::cout << "[ seed     ] " << seed << '\n';
    std::mt19937 rng(seed);
    const auto estimate = static_cast<double>(n) * 47;
    std::uniform_real_distribution<double> fraction(0.05, 0.40);
    const auto kill_at = empty_journal + static_cast<std::uint64_t>(fraction(rng) * estimate);
    ASSERT_TRUE(wait_until(
        [&] { return bytes_on_disk(journal) >= kill_at || !submit->running(); }, 60s, 1ms))
        << "the journal did not grow; " << ventilator.logs() << file_tail(dir / "submit.err", 10);
    // Paces the fault.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution(0, 20)(rng)));
    ASSERT_TRUE(submit->running())
        << "the submit ended before the kill: " << submit->status()->describe() << '\n'
        << file_tail(dir / "submit.out", 5) << file_tail(dir / "submit.err", 10);
    ventilator.kill();
    const auto size_at_kill = bytes_on_disk(journal);
    // Paces the fault: the submit's batches in flight time out against a dead ventilator.
    std::this_thread::sleep_for(1500ms);
    ASSERT_NO_THROW(ventilator.start()) << ventilator.logs();

    const auto sub_end = submit->wait_for_exit(120s);
    ASSERT_TRUE(sub_end.has_value()) << "the submit did not finish after the restart\n"
                                     << file_tail(dir / "submit.err", 10) << ventilator.logs();
    const auto sub_out = read_file(dir / "submit.out");
    ASSERT_TRUE(sub_end->success()) << sub_end->describe() << '\n'
                                    << sub_out << read_file(dir / "submit.err");

    // What the first life had made durable, as the second one replayed it.
    const auto replayed = ventilator.logged_per_incarnation("journal replayed", " requeued=");
    ASSERT_EQ(replayed.size(), 2u);
    const auto recovered = replayed[1];
    EXPECT_GT(recovered, 0u) << "the kill came before any submission was durable";
    EXPECT_LT(recovered, n) << "the kill came after the whole submission was durable";
    const auto status = try_status(dir.path(), control_ep);
    ASSERT_TRUE(status.has_value()) << ventilator.logs();
    // No workers yet: every task is live, each accepted once by one of the two lives.
    EXPECT_EQ(count_of(*status, "live"), n) << status->dump();
    EXPECT_EQ(recovered + count_of(*status, "submitted"), n) << status->dump();
    EXPECT_EQ(field_in(sub_out, "accepted tasks=") + field_in(sub_out, "duplicate_keys="),
              static_cast<long long>(n))
        << sub_out;

    const auto sink_ep = loopback(fixed_ports(1)[0]);
    const auto output = dir / "results.jsonl";
    auto sink = make_sink(dir.path(), sink_ep, control_ep, output, n);
    sink.start();
    std::vector<std::unique_ptr<child_process>> workers;
    worker_options wopts;
    for (int i = 0; i < 4; ++i) {
        workers.push_back(start_worker(dir.path(), i, workers_ep, sink_ep, wopts));
    }
    const auto sink_end = sink.process().wait_for_exit(120s);
    ASSERT_TRUE(sink_end.has_value()) << "the sink did not record all tasks\n"
                                      << ventilator.logs() << sink.logs();
    ASSERT_TRUE(sink_end->success()) << sink_end->describe() << '\n' << sink.logs();

    const auto r = check_results(tasks, output, echoes(payload));
    std::cout << fmt::format(
        "[ figures  ] tasks={} journal_bytes_at_kill={} durable_before_kill={} "
        "accepted_after_restart={} duplicate_keys={} resent_batches={} duplicates_dropped={}\n",
        n,
        size_at_kill,
        recovered,
        count_of(*status, "submitted"),
        count_of(*status, "duplicate_keys"),
        field_in(sub_out, "resent_batches="),
        duplicates_dropped(sink));
    expect_exactly_once(r, n);
    expect_final_sink_stats(sink, dir.path(), n);
    expect_taskvent_check_passes(dir.path(), tasks.path, output);
}

TEST(durability, a_journal_past_its_compaction_threshold_shrinks_and_loses_no_live_task) {
    temp_dir dir;
    constexpr std::size_t n_done = 30000;  // finished before the kill
    constexpr std::size_t n_live = 5000;   // live at the kill
    constexpr std::size_t n = n_done + n_live;
    constexpr std::uint64_t compact_bytes = 2u << 20;
    // ~200-byte payloads: 30,000 tasks make a journal of about 7 MB, several thresholds.
    const auto payload = [](std::size_t i) {
        auto p = "payload " + std::to_string(i) + " ";
        p.resize(200, 'x');
        return p;
    };
    const auto all = write_workload(dir / "tasks.jsonl", n, payload);
    // The same tasks as two submissions: the first n_done lines, then the rest.
    {
        std::ifstream in(all.path);
        std::ofstream first(dir / "first.jsonl");
        std::ofstream second(dir / "second.jsonl");
        std::string line;
        for (std::size_t i = 0; std::getline(in, line); ++i) {
            (i < n_done ? first : second) << line << '\n';
        }
    }
    const auto ports = fixed_ports(3);
    const auto workers_ep = loopback(ports[0]);
    const auto control_ep = loopback(ports[1]);
    const auto results_ep = loopback(ports[2]);
    const auto journal = dir / "journal";
    const auto output = dir / "results.jsonl";

    auto ventilator = make_ventilator(dir.path(),
                                      workers_ep,
                                      control_ep,
                                      journal,
                                      {"--journal-compact-bytes", std::to_string(compact_bytes)});
    auto sink = make_sink(dir.path(), results_ep, control_ep, output, n);
    ventilator.start();
    sink.start();

    // Phase 1: the first submission is journaled before any worker runs, so the journal
    // reaches its full size (several thresholds) while every task in it is live and must
    // not be compacted away. Then workers finish them, and once most of the journal is
    // finished tasks it is compacted while dispatch goes on. The journal is watched on disk
    // (often: stat is cheap) and through status (what the ventilator says it holds).
    const auto first =
        run_command(dir.path(),
                    "submit-first",
                    program_path("taskvent"),
                    {"submit", (dir / "first.jsonl").string(), "--control", control_ep},
                    120s);
    ASSERT_TRUE(first.status.success()) << first.out << first.err;
    std::uint64_t peak = bytes_on_disk(journal);
    const auto full = try_status(dir.path(), control_ep);
    ASSERT_TRUE(full.has_value()) << ventilator.logs();
    peak = std::max(peak, journal_field(*full, "bytes"));
    EXPECT_GT(peak, 3 * compact_bytes) << full->dump();
    EXPECT_EQ(journal_field(*full, "compactions"), 0u)
        << "compacted while every task in it was live; " << full->dump();

    std::vector<std::unique_ptr<child_process>> workers;
    worker_options wopts;
    for (int i = 0; i < 2; ++i) {
        workers.push_back(start_worker(dir.path(), i, workers_ep, results_ep, wopts));
    }
    nlohmann::json last;
    auto last_status_at = steady::now() - 1h;
    const bool finished = wait_until(
        [&] {
            peak = std::max(peak, bytes_on_disk(journal));
            if (steady::now() - last_status_at < 200ms) {
                return false;
            }
            last_status_at = steady::now();
            const auto s = try_status(dir.path(), control_ep);
            if (!s) {
                return false;
            }
            last = *s;
            peak = std::max(peak, journal_field(last, "bytes"));
            return count_of(last, "live") == 0;
        },
        180s,
        5ms);
    ASSERT_TRUE(finished) << "the first " << n_done << " tasks did not finish; last status "
                          << last.dump() << '\n'
                          << ventilator.logs() << sink.logs();

    // Phase 2: no workers, so the second submission stays live.
    for (auto& w : workers) {
        const auto end = w->terminate(30s);
        EXPECT_TRUE(end.success()) << "a draining worker: " << end.describe() << '\n'
                                   << w->log_tail(20);
    }
    const auto second =
        run_command(dir.path(),
                    "submit-second",
                    program_path("taskvent"),
                    {"submit", (dir / "second.jsonl").string(), "--control", control_ep},
                    120s);
    ASSERT_TRUE(second.status.success()) << second.out << second.err;
    const auto before_kill = try_status(dir.path(), control_ep);
    ASSERT_TRUE(before_kill.has_value()) << ventilator.logs();
    const auto on_disk = bytes_on_disk(journal);
    const auto compactions = journal_field(*before_kill, "compactions");
    const auto live = count_of(*before_kill, "live");
    EXPECT_GE(compactions, 1u) << before_kill->dump() << '\n' << ventilator.logs();
    EXPECT_LT(on_disk, peak) << "the journal did not shrink; " << before_kill->dump();
    EXPECT_EQ(live, n_live) << before_kill->dump();

    // Phase 3: a kill after compaction; the restart must find every live task and every
    // finished task's key in the compacted journal.
    ventilator.kill();
    ASSERT_NO_THROW(ventilator.start()) << ventilator.logs();
    const auto replayed = ventilator.logged_per_incarnation("journal replayed", " requeued=");
    EXPECT_EQ(replayed.back(), live) << ventilator.logs();
    const auto after = try_status(dir.path(), control_ep);
    ASSERT_TRUE(after.has_value()) << ventilator.logs();
    EXPECT_EQ(count_of(*after, "live"), live) << after->dump();
    EXPECT_EQ(count_of(*after, "queued"), live) << after->dump();
    // Submitting everything again must be refused line by line: the keys survived.
    const auto again = run_command(dir.path(),
                                   "submit-again",
                                   program_path("taskvent"),
                                   {"submit", all.path.string(), "--control", control_ep},
                                   120s);
    ASSERT_TRUE(again.status.success()) << again.out << again.err;
    EXPECT_EQ(field_in(again.out, "accepted tasks="), 0) << again.out;
    EXPECT_EQ(field_in(again.out, "duplicate_keys="), static_cast<long long>(n)) << again.out;

    // Phase 4: workers again; the sink (never restarted) reaches every task and exits.
    for (int i = 2; i < 4; ++i) {
        workers.push_back(start_worker(dir.path(), i, workers_ep, results_ep, wopts));
    }
    const auto sink_end = sink.process().wait_for_exit(120s);
    ASSERT_TRUE(sink_end.has_value()) << "the sink did not record all tasks\n"
                                      << ventilator.logs() << sink.logs();
    ASSERT_TRUE(sink_end->success()) << sink_end->describe() << '\n' << sink.logs();

    const auto r = check_results(all, output, echoes(payload));
    std::cout << fmt::format(
        "[ figures  ] tasks={} journal_peak_bytes={} journal_bytes_before_kill={} "
        "compactions={} live_at_kill={} requeued_on_restart={} duplicates_dropped={}\n",
        n,
        peak,
        on_disk,
        compactions,
        live,
        replayed.back(),
        duplicates_dropped(sink));
    expect_exactly_once(r, n);
    expect_final_sink_stats(sink, dir.path(), n);
    expect_taskvent_check_passes(dir.path(), all.path, output);
}

/// Payload -> records in the sink's output whose echoed result is that payload: for tasks
/// without a key, where check_results has nothing to match on.
std::map<std::string, std::uint64_t> records_by_result(const fs::path& output) {
    std::map<std::string, std::uint64_t> out;
    std::ifstream in(output);
    std::string line;
    while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object()) {
            ++out[j.value("result", std::string{})];
        }
    }
    return out;
}

TEST(durability, a_restart_after_compaction_never_reuses_a_task_id) {
    // Tasks without a key leave nothing in a compacted journal once they are done. The
    // restarted ventilator must still number new tasks after them: the sink keeps the first
    // record per id, so a reused id makes a new task's result a "duplicate", dropped while
    // the ventilator counts the task done.
    temp_dir dir;
    constexpr std::size_t n_old = 4096;
    constexpr std::size_t n_new = 100;
    {
        std::ofstream old_tasks(dir / "old.txt");
        for (std::size_t i = 0; i < n_old; ++i) {
            old_tasks << "old-" << i << '\n';
        }
        std::ofstream new_tasks(dir / "new.txt");
        for (std::size_t i = 0; i < n_new; ++i) {
            new_tasks << "new-" << i << '\n';
        }
    }
    const auto ports = fixed_ports(3);
    const auto workers_ep = loopback(ports[0]);
    const auto control_ep = loopback(ports[1]);
    const auto results_ep = loopback(ports[2]);
    const auto journal = dir / "journal";
    const auto output = dir / "results.jsonl";
    // The smallest threshold: the journal is compacted whenever most of it is finished.
    auto ventilator = make_ventilator(
        dir.path(), workers_ep, control_ep, journal, {"--journal-compact-bytes", "1"});
    auto sink = make_sink(dir.path(), results_ep, control_ep, output, 0);
    ventilator.start();
    sink.start();

    auto submit_lines = [&](const std::string& file) {
        return run_command(dir.path(),
                           "submit-" + file,
                           program_path("taskvent"),
                           {"submit", (dir / file).string(), "--lines", "--control", control_ep},
                           120s);
    };
    auto wait_until_nothing_live = [&](const std::string& what) {
        nlohmann::json last;
        const bool idle = wait_until(
            [&] {
                const auto s = try_status(dir.path(), control_ep);
                if (s) {
                    last = *s;
                }
                return s && count_of(*s, "live") == 0;
            },
            120s,
            100ms);
        EXPECT_TRUE(idle) << what << "; last status " << last.dump() << '\n'
                          << ventilator.logs() << sink.logs();
        return last;
    };

    // Every old task is journaled before a worker runs, then all of them finish.
    const auto old_sub = submit_lines("old.txt");
    ASSERT_TRUE(old_sub.status.success()) << old_sub.out << old_sub.err;
    std::vector<std::unique_ptr<child_process>> workers;
    workers.push_back(start_worker(dir.path(), 0, workers_ep, results_ep, worker_options{}));
    const auto done = wait_until_nothing_live("the old tasks did not finish");
    ASSERT_FALSE(HasFailure());

    ventilator.kill();
    ASSERT_NO_THROW(ventilator.start()) << ventilator.logs();
    const auto new_sub = submit_lines("new.txt");
    ASSERT_TRUE(new_sub.status.success()) << new_sub.out << new_sub.err;
    const auto after = wait_until_nothing_live("the new tasks did not finish");
    ASSERT_FALSE(HasFailure());
    // The ventilator counts the new tasks done only once the sink confirmed them, which it
    // does after its output is fsynced: every record is in the file now.
    sink.process().terminate(10s);

    const auto records = records_by_result(output);
    std::uint64_t missing_old = 0;
    std::uint64_t missing_new = 0;
    std::uint64_t repeated = 0;
    for (std::size_t i = 0; i < n_old + n_new; ++i) {
        const auto payload =
            i < n_old ? "old-" + std::to_string(i) : "new-" + std::to_string(i - n_old);
        const auto it = records.find(payload);
        const auto c = it == records.end() ? 0 : it->second;
        if (c == 0) {
            ++(i < n_old ? missing_old : missing_new);
        } else if (c > 1) {
            ++repeated;
        }
    }
    std::cout << fmt::format(
        "[ figures  ] old_tasks={} new_tasks={} compactions_before_kill={} "
        "journal_bytes_before_kill={} new_tasks_done_by_status={} missing_old={} missing_new={} "
        "repeated={} duplicates_dropped={}\n",
        n_old,
        n_new,
        journal_field(done, "compactions"),
        journal_field(done, "bytes"),
        count_of(after, "done"),
        missing_old,
        missing_new,
        repeated,
        duplicates_dropped(sink));
    EXPECT_EQ(missing_old, 0u);
    EXPECT_EQ(missing_new, 0u) << "new tasks were counted done but have no record: their ids "
                                  "were given out again after the restart and the sink took "
                                  "their results for duplicates of old tasks";
    EXPECT_EQ(repeated, 0u);
}

}  // namespace
}  // namespace taskvent::testing
