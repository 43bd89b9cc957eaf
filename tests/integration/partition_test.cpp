// Network partitions between real hosts. The ventilator, the sink and three workers each
// run in a network namespace of their own, joined by a bridge (tests/support/netns.hpp),
// while 100,000 sleep tasks go through. One worker is cut off for 10 s and for 30 s, the
// sink is cut off from everyone for 10 s, and the ventilator from the workers (not from the
// sink) for 10 s. Whatever the cut, every task ends in exactly one record. A cut-off worker
// is declared dead and what it held is reissued; once healed it registers again and takes
// work. Needs root; without it every test skips and says why.
//
// Timing: a sleep task of P ms on C slots bounds a worker's rate at C * 1000 / P tasks/s,
// whatever the machine; load only slows it down. Each scenario's P is chosen from that
// bound so that even at full speed the run outlasts its cut by several seconds, leaving
// time to see the rejoin while tasks are still being handed out.
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "netns.hpp"
#include "pipeline.hpp"
#include "process.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

constexpr std::size_t task_count = 100000;
constexpr std::size_t worker_count = 3;
constexpr std::uint32_t concurrency = 8;
constexpr std::uint32_t prefetch = 32;
/// Most tasks a worker holds at once. A worker that writes more records than this after the
/// heal took new work after it; it did not just deliver what it held through the cut.
constexpr std::uint32_t capacity = concurrency + prefetch;
/// Tasks done before a cut: the run is under way and every worker has had credit filled.
constexpr std::uint64_t done_before_cut = 1000;

/// Generous throughout: a loaded 2-core machine must not fail a test.
constexpr auto ready_timeout = 30s;
constexpr std::uint32_t status_timeout_ms = 3000;
constexpr auto status_poll = 20ms;

/// Application heartbeats: a cut worker is declared dead after 200 ms x 3 of silence.
constexpr std::uint32_t heartbeat_interval_ms = 200;
constexpr std::uint32_t heartbeat_liveness = 3;
/// Results and confirms lost with a cut connection are reissued after this.
constexpr std::uint32_t confirm_timeout_ms = 2000;
/// Registration retries from 200 ms doubling to 1 s. The defaults (1 s to 32 s) would let a
/// worker cut off for 30 s sit out up to 32 s more after the heal before trying again.
/// Connections are watched by ZMTP heartbeats (1 s, dropped after 5 s of silence; built in,
/// see common/transport.hpp): a connection that died in a cut is closed and dialled again
/// (every 1 s at most from a worker to the sink, every 5 s from the sink to the ventilator).
constexpr std::uint32_t reconnect_min_ms = 200;
constexpr std::uint32_t reconnect_max_ms = 1000;

std::int64_t ms_between(steady::time_point from, steady::time_point to) {
    return std::chrono::duration_cast<milliseconds>(to - from).count();
}

/// The status entry of the registered worker named `name`; null when it is not registered.
const nlohmann::json* listed_worker(const nlohmann::json& status, const std::string& name) {
    const auto workers = status.find("workers");
    if (workers == status.end() || !workers->is_array()) {
        return nullptr;
    }
    for (const auto& w : *workers) {
        if (w.value("name", std::string{}) == name) {
            return &w;
        }
    }
    return nullptr;
}

/// Records per worker name in the output from byte `offset` on (a line cut by the offset is
/// skipped: it was being written before it).
std::map<std::string, std::uint64_t> records_by_worker_from(const std::filesystem::path& path,
                                                            std::uintmax_t offset) {
    std::map<std::string, std::uint64_t> out;
    std::ifstream in(path);
    if (!in) {
        return out;
    }
    std::string line;
    if (offset > 0) {
        in.seekg(static_cast<std::streamoff>(offset - 1));
        char before = '\n';
        in.get(before);
        if (before != '\n') {
            std::getline(in, line);
        }
    }
    while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object()) {
            ++out[j.value("worker", std::string{})];
        }
    }
    return out;
}

std::size_t count_lines_with(const std::filesystem::path& path, const std::string& needle) {
    std::ifstream in(path);
    std::size_t n = 0;
    std::string line;
    while (std::getline(in, line)) {
        n += line.find(needle) != std::string::npos ? 1 : 0;
    }
    return n;
}

/// A ventilator, a sink and `worker_count` workers, each on a host of its own in `net`,
/// talking over the bridge. Like `pipeline`, but every program is started inside its host's
/// namespace and every `taskvent` command runs in the ventilator's, which reaches the
/// control socket without the test process needing a leg on the bridge. Owns its
/// processes: destroying it stops and reaps every one by pid.
class spread_pipeline {
  public:
    spread_pipeline(test_network& net, const std::filesystem::path& dir, std::uint32_t task_ms);
    ~spread_pipeline();
    spread_pipeline(const spread_pipeline&) = delete;
    spread_pipeline& operator=(const spread_pipeline&) = delete;

    static std::string worker_host(std::size_t i) { return "worker" + std::to_string(i); }
    static std::string worker_name(std::size_t i) { return "w" + std::to_string(i); }

    child_process& sink() { return *sink_; }
    child_process& worker(std::size_t i) { return *workers_.at(i); }
    const std::filesystem::path& output_path() const { return output_; }

    command_result submit(const std::filesystem::path& tasks_file);
    nlohmann::json status();
    nlohmann::json wait_for_status(const std::function<bool(const nlohmann::json&)>& pred,
                                   const std::string& what,
                                   milliseconds timeout);
    exit_status wait_for_sink_exit(milliseconds timeout);
    nlohmann::json sink_stats() const;
    std::string diagnostics(std::size_t lines = 15);

  private:
    std::unique_ptr<child_process> start(const std::string& host,
                                         const std::string& program,
                                         const std::string& log_name,
                                         std::vector<std::string> args);

    test_network& net_;
    std::filesystem::path dir_;
    std::filesystem::path output_;
    std::filesystem::path stats_file_;
    std::string control_endpoint_;
    std::unique_ptr<child_process> ventilator_;
    std::unique_ptr<child_process> sink_;
    std::vector<std::unique_ptr<child_process>> workers_;
};

spread_pipeline::spread_pipeline(test_network& net,
                                 const std::filesystem::path& dir,
                                 std::uint32_t task_ms)
    : net_(net), dir_(dir), output_(dir / "results.jsonl"), stats_file_(dir / "sink-stats.json") {
    const auto vhost = net_.add_host("ventilator");
    const auto shost = net_.add_host("sink");
    for (std::size_t i = 0; i < worker_count; ++i) {
        net_.add_host(worker_host(i));
    }
    std::cout << "[ network  ] ventilator=" << vhost.address << " sink=" << shost.address
              << " workers=" << net_.at(worker_host(0)).address << ".."
              << net_.at(worker_host(worker_count - 1)).address << " task_ms=" << task_ms << '\n';

    ventilator_ = start("ventilator",
                        "ventilator",
                        "ventilator.log",
                        {
                            "--workers-bind",
                            "tcp://" + vhost.address + ":*",
                            "--control-bind",
                            "tcp://" + vhost.address + ":*",
                            "--heartbeat-interval-ms",
                            std::to_string(heartbeat_interval_ms),
                            "--heartbeat-liveness",
                            std::to_string(heartbeat_liveness),
                            "--confirm-timeout-ms",
                            std::to_string(confirm_timeout_ms),
                            "--ready-file",
                            (dir_ / "ventilator.ready").string(),
                        });
    const auto v = read_ready_file(
        dir_ / "ventilator.ready", {"workers", "control"}, *ventilator_, ready_timeout);
    const auto workers_endpoint = v["workers"].get<std::string>();
    control_endpoint_ = v["control"].get<std::string>();

    sink_ = start("sink",
                  "sink",
                  "sink.log",
                  {
                      "--results-bind",
                      "tcp://" + shost.address + ":*",
                      "--control",
                      control_endpoint_,
                      "--output",
                      output_.string(),
                      "--expect",
                      std::to_string(task_count),
                      "--stats-file",
                      stats_file_.string(),
                      "--ready-file",
                      (dir_ / "sink.ready").string(),
                  });
    const auto s = read_ready_file(dir_ / "sink.ready", {"results"}, *sink_, ready_timeout);
    const auto results_endpoint = s["results"].get<std::string>();

    for (std::size_t i = 0; i < worker_count; ++i) {
        workers_.push_back(start(worker_host(i),
                                 "worker",
                                 "worker-" + std::to_string(i) + ".log",
                                 {
                                     "--ventilator",
                                     workers_endpoint,
                                     "--sink",
                                     results_endpoint,
                                     "--handler",
                                     "sleep",
                                     "--concurrency",
                                     std::to_string(concurrency),
                                     "--prefetch",
                                     std::to_string(prefetch),
                                     "--name",
                                     worker_name(i),
                                     "--reconnect-min-ms",
                                     std::to_string(reconnect_min_ms),
                                     "--reconnect-max-ms",
                                     std::to_string(reconnect_max_ms),
                                     // Teardown only: the sink is gone by then.
                                     "--drain-timeout-ms",
                                     "2000",
                                 }));
    }
    wait_for_status(
        [](const nlohmann::json& j) { return count_of(j, "workers_alive") >= worker_count; },
        "all workers registered",
        ready_timeout);
}

spread_pipeline::~spread_pipeline() {
    stop_pipeline(workers_, sink_.get(), ventilator_.get());
}

std::unique_ptr<child_process> spread_pipeline::start(const std::string& host,
                                                      const std::string& program,
                                                      const std::string& log_name,
                                                      std::vector<std::string> args) {
    args.push_back("--log-level");
    args.push_back("info");
    spawn_options so;
    so.program = program_path(program);
    so.args = std::move(args);
    so.stdout_path = dir_ / log_name;
    return std::make_unique<child_process>(net_.in_host(host, std::move(so)));
}

command_result spread_pipeline::submit(const std::filesystem::path& tasks_file) {
    return net_.run_in("ventilator",
                       dir_,
                       "submit",
                       program_path("taskvent"),
                       {"submit", tasks_file.string(), "--control", control_endpoint_},
                       120s);
}

nlohmann::json spread_pipeline::status() {
    const auto r = net_.run_in("ventilator",
                               dir_,
                               "status",
                               program_path("taskvent"),
                               {"status",
                                "--json",
                                "--control",
                                control_endpoint_,
                                "--timeout-ms",
                                std::to_string(status_timeout_ms)},
                               milliseconds(status_timeout_ms) + 10s);
    return status_json(r, [this] { return diagnostics(); });
}

nlohmann::json spread_pipeline::wait_for_status(
    const std::function<bool(const nlohmann::json&)>& pred,
    const std::string& what,
    milliseconds timeout) {
    return poll_status([this] { return status(); },
                       pred,
                       what,
                       timeout,
                       [this] { return diagnostics(); },
                       status_poll);
}

exit_status spread_pipeline::wait_for_sink_exit(milliseconds timeout) {
    return wait_for_exit_of_sink(
        *sink_, timeout, [this] { return status(); }, [this] { return diagnostics(); });
}

nlohmann::json spread_pipeline::sink_stats() const {
    return read_sink_stats(stats_file_);
}

std::string spread_pipeline::diagnostics(std::size_t lines) {
    std::string out;
    auto describe = [&](child_process* p, const std::string& label) {
        if (p == nullptr) {
            return;
        }
        out += fmt::format("--- {} pid={} {} log={}\n",
                           label,
                           p->pid(),
                           p->running() ? "running" : p->status()->describe(),
                           p->log_path().string());
        out += p->log_tail(lines);
    };
    describe(ventilator_.get(), "ventilator");
    describe(sink_.get(), "sink");
    for (std::size_t i = 0; i < workers_.size(); ++i) {
        describe(workers_[i].get(), worker_name(i));
    }
    return out;
}

}  // namespace

/// Builds the test network before each test; skips when this machine cannot.
class partition : public ::testing::Test {
  protected:
    enum class cut_kind {
        one_worker,               ///< worker 0's port on the bridge down
        sink,                     ///< the sink's port on the bridge down
        ventilator_from_workers,  ///< blackholes between the ventilator and every worker
    };
    struct scenario {
        std::string label;
        cut_kind cut;
        std::chrono::seconds cut_for;
        std::uint32_t task_ms;  ///< the sleep handler's payload
    };

    void SetUp() override {
        try {
            net_.emplace(dir_.path());
        } catch (const netns_unavailable& e) {
            GTEST_SKIP() << "partition tests skipped: " << e.what();
        }
    }

    void run(const scenario& s);

    temp_dir dir_;
    std::optional<test_network> net_;
};

void partition::run(const scenario& s) {
    auto& net = *net_;
    const auto tasks = write_workload(
        dir_ / "tasks.jsonl", task_count, [&](std::size_t) { return std::to_string(s.task_ms); });
    spread_pipeline p(net, dir_.path(), s.task_ms);
    const auto run_start = steady::now();
    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();

    // The workers the ventilator must lose in this cut, by name.
    std::vector<std::string> victims;
    std::vector<std::string> worker_hosts;
    for (std::size_t i = 0; i < worker_count; ++i) {
        worker_hosts.push_back(spread_pipeline::worker_host(i));
        if (s.cut == cut_kind::ventilator_from_workers ||
            (s.cut == cut_kind::one_worker && i == 0)) {
            victims.push_back(spread_pipeline::worker_name(i));
        }
    }
    auto all_listed = [&victims](const nlohmann::json& j) {
        return std::all_of(victims.begin(), victims.end(), [&](const auto& v) {
            return listed_worker(j, v) != nullptr;
        });
    };
    auto none_listed = [&victims](const nlohmann::json& j) {
        return std::none_of(victims.begin(), victims.end(), [&](const auto& v) {
            return listed_worker(j, v) != nullptr;
        });
    };

    // Cuts (or heals) the links of this scenario.
    auto set_cut = [&](bool cut) {
        switch (s.cut) {
            case cut_kind::one_worker: {
                const auto host = spread_pipeline::worker_host(0);
                cut ? net.cut(host) : net.heal(host);
                break;
            }
            case cut_kind::sink:
                cut ? net.cut("sink") : net.heal("sink");
                break;
            case cut_kind::ventilator_from_workers:
                cut ? net.cut_from("ventilator", worker_hosts)
                    : net.heal_from("ventilator", worker_hosts);
                break;
        }
    };

    // Cut only once work is in flight everywhere: each victim holds tasks, so the cut
    // strands running, prefetched and reported-but-unconfirmed ones.
    const auto before_cut = p.wait_for_status(
        [&](const nlohmann::json& j) {
            return count_of(j, "done") >= done_before_cut &&
                   std::all_of(victims.begin(), victims.end(), [&](const auto& v) {
                       const auto* w = listed_worker(j, v);
                       return w != nullptr && count_of(*w, "held") > 0;
                   });
        },
        "the run under way with every victim holding tasks",
        60s);
    set_cut(true);
    const auto cut_at = steady::now();

    // Detection: the ventilator's own count, polled from the ventilator's host.
    std::optional<std::int64_t> detection_ms;
    if (!victims.empty()) {
        const auto want_dead = count_of(before_cut, "workers_dead") + victims.size();
        p.wait_for_status(
            [&](const nlohmann::json& j) {
                return count_of(j, "workers_dead") >= want_dead && none_listed(j);
            },
            "the cut-off workers declared dead while cut off",
            s.cut_for);
        detection_ms = ms_between(cut_at, steady::now());
    }

    // Paces the cut; nothing below relies on this sleep for correctness.
    std::this_thread::sleep_until(cut_at + s.cut_for);
    const auto before_heal = p.status();
    ASSERT_TRUE(p.sink().running() && count_of(before_heal, "done") < task_count)
        << "the run ended while cut off, so the heal proves nothing: lengthen the tasks; "
        << before_heal.dump();
    const auto heal_offset = std::filesystem::file_size(p.output_path());
    set_cut(false);
    const auto healed_at = steady::now();
    const auto cut_ms = ms_between(cut_at, healed_at);

    std::optional<std::int64_t> rejoin_ms;
    if (!victims.empty()) {
        const auto want_joined = count_of(before_heal, "workers_joined") + victims.size();
        p.wait_for_status(
            [&](const nlohmann::json& j) {
                return count_of(j, "workers_joined") >= want_joined && all_listed(j);
            },
            "the cut-off workers registered again after the heal",
            60s);
        rejoin_ms = ms_between(healed_at, steady::now());
    }

    const auto sink_end = p.wait_for_sink_exit(240s);
    const auto run_ms = ms_between(run_start, steady::now());
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path());
    const auto after_heal = records_by_worker_from(p.output_path(), heal_offset);
    auto optional_ms = [](const std::optional<std::int64_t>& v) {
        return v ? std::to_string(*v) : std::string("-");
    };
    std::cout << "[ figures  ] scenario=" << s.label << " tasks=" << task_count
              << " lost=" << r.lost << " unexpected=" << r.unexpected
              << " duplicated=" << r.duplicated
              << " duplicates_dropped=" << count_of(stats, "duplicates")
              << " reissued=" << count_of(status, "reissued")
              << " workers_dead=" << count_of(status, "workers_dead")
              << " confirm_timeouts=" << count_of(status, "confirm_timeouts")
              << " detection_ms=" << optional_ms(detection_ms) << " cut_ms=" << cut_ms
              << " rejoin_ms=" << optional_ms(rejoin_ms) << " run_s=" << run_ms / 1000 << '\n';

    EXPECT_EQ(r.lost, 0u) << r.summary();
    EXPECT_EQ(r.unexpected, 0u) << r.summary();
    EXPECT_EQ(r.duplicated, 0u) << r.summary();
    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.records, task_count) << r.summary();
    EXPECT_EQ(r.ok, task_count) << "sleep tasks cannot fail; " << r.summary();

    if (s.cut == cut_kind::sink) {
        // Results and confirms that died with the sink's connections came back by timeout.
        EXPECT_GT(count_of(status, "confirm_timeouts"), 0u) << status.dump();
    } else {
        EXPECT_GT(count_of(status, "reissued"), 0u)
            << "the cut-off workers held tasks; " << status.dump();
    }
    for (std::size_t i = 0; i < worker_count; ++i) {
        auto& w = p.worker(i);
        const auto name = spread_pipeline::worker_name(i);
        EXPECT_TRUE(w.running()) << name
                                 << " exited: " << (w.status() ? w.status()->describe() : "")
                                 << '\n'
                                 << w.log_tail(30);
        if (std::find(victims.begin(), victims.end(), name) == victims.end()) {
            continue;
        }
        // Cut off is not dead: it registered again, as its own log says, and took new work.
        EXPECT_GE(count_lines_with(w.log_path(), "registered worker="), 2u) << w.log_tail(30);
        EXPECT_GT(after_heal.count(name) ? after_heal.at(name) : 0u, capacity)
            << name << " wrote too few records after the heal to have taken new work";
    }
}

// 4 ms tasks on 3 x 8 slots: at most 6,000 tasks/s, and 4,000 while worker 0 is out, so the
// run lasts at least 20 s: past the 10 s cut by 9 s or more.
TEST_F(partition, worker_cut_off_for_10_s_is_declared_dead_and_rejoins_after_the_heal) {
    run({.label = "worker_cut_10s", .cut = cut_kind::one_worker, .cut_for = 10s, .task_ms = 4});
}

// 7 ms tasks: at most 3,430 tasks/s, 2,290 while worker 0 is out, so at least 39 s of run
// for a 30 s cut.
TEST_F(partition, worker_cut_off_for_30_s_is_declared_dead_and_rejoins_after_the_heal) {
    run({.label = "worker_cut_30s", .cut = cut_kind::one_worker, .cut_for = 30s, .task_ms = 7});
}

// 3 ms tasks: at most 8,000 tasks/s, and nothing is recorded while the sink is out, so at
// least 12 s of run remain after the 10 s cut.
TEST_F(partition, sink_cut_off_for_10_s_loses_and_duplicates_nothing) {
    run({.label = "sink_cut_10s", .cut = cut_kind::sink, .cut_for = 10s, .task_ms = 3});
}

// 3 ms tasks: as above; with no worker registered nothing is handed out during the cut.
TEST_F(partition, ventilator_cut_off_from_the_workers_for_10_s_gets_every_worker_back) {
    run({.label = "ventilator_cut_from_workers_10s",
         .cut = cut_kind::ventilator_from_workers,
         .cut_for = 10s,
         .task_ms = 3});
}

}  // namespace taskvent::testing
