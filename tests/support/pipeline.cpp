#include "pipeline.hpp"

#include <signal.h>

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace taskvent::testing {
namespace {

using steady = std::chrono::steady_clock;

/// Generous: a loaded 2-core machine running a parallel build must not fail a test.
constexpr auto ready_timeout = std::chrono::seconds(30);
constexpr auto status_timeout_ms = 3000;
/// How long a stopping pipeline waits for SIGTERM to work before SIGKILL.
constexpr auto stop_grace = std::chrono::seconds(5);

}  // namespace

workload write_workload(const std::filesystem::path& path,
                        std::size_t count,
                        const std::function<std::string(std::size_t)>& payload) {
    workload w;
    w.path = path;
    w.keys.reserve(count);
    std::ofstream out(path, std::ios::trunc);
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
    for (std::size_t i = 0; i < count; ++i) {
        w.keys.push_back("k" + std::to_string(i));
        const nlohmann::json line = {
            {"key", w.keys.back()},
            {"payload", payload ? payload(i) : "task " + std::to_string(i)}};
        out << line.dump() << '\n';
    }
    out.close();
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
    return w;
}

std::string results_check::summary() const {
    return fmt::format(
        "tasks={} records={} lost={} unexpected={} duplicated={} duplicate_ids={} malformed={} "
        "rejected={} ok={} failed={} dead={}",
        tasks,
        records,
        lost,
        unexpected,
        duplicated,
        duplicate_ids,
        malformed,
        rejected,
        ok,
        failed,
        dead);
}

results_check check_results(const workload& tasks,
                            const std::filesystem::path& results_path,
                            const record_verifier& verify) {
    results_check r;
    r.tasks = tasks.keys.size();
    struct entry {
        std::size_t index = 0;
        std::uint32_t records = 0;
    };
    std::unordered_map<std::string, entry> seen;  // key -> task index, records
    seen.reserve(tasks.keys.size());
    for (std::size_t i = 0; i < tasks.keys.size(); ++i) {
        seen.emplace(tasks.keys[i], entry{i, 0});
    }
    std::unordered_set<std::uint64_t> ids;

    std::ifstream in(results_path);
    if (!in) {
        throw std::runtime_error("cannot read results " + results_path.string());
    }
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) {
            continue;
        }
        ++r.records;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("id") || !j["id"].is_number_unsigned() ||
            !j.contains("key") || !j["key"].is_string()) {
            ++r.malformed;
            continue;
        }
        const auto status = j.value("status", std::string{});
        r.ok += status == "ok" ? 1 : 0;
        r.failed += status == "failed" ? 1 : 0;
        r.dead += status == "dead" ? 1 : 0;
        if (!ids.insert(j["id"].get<std::uint64_t>()).second) {
            ++r.duplicate_ids;
        }
        auto it = seen.find(j["key"].get<std::string>());
        if (it == seen.end()) {
            ++r.unexpected;
            continue;
        }
        if (++it->second.records > 1) {
            ++r.duplicated;
        }
        if (verify && !verify(it->second.index, j)) {
            ++r.rejected;
        }
    }
    for (const auto& [key, e] : seen) {
        r.lost += e.records == 0 ? 1 : 0;
    }
    return r;
}

pipeline::pipeline(const std::filesystem::path& dir, pipeline_options opts)
    : dir_(dir),
      opts_(std::move(opts)),
      output_(dir / "results.jsonl"),
      stats_file_(dir / "sink-stats.json") {
    std::vector<std::string> vargs = {
        "--workers-bind",
        "tcp://127.0.0.1:*",
        "--control-bind",
        "tcp://127.0.0.1:*",
        "--heartbeat-interval-ms",
        std::to_string(opts_.heartbeat_interval_ms),
        "--heartbeat-liveness",
        std::to_string(opts_.heartbeat_liveness),
        "--confirm-timeout-ms",
        std::to_string(opts_.confirm_timeout_ms),
        "--ready-file",
        (dir_ / "ventilator.ready").string(),
    };
    vargs.insert(vargs.end(), opts_.ventilator_flags.begin(), opts_.ventilator_flags.end());
    start("ventilator", "ventilator.log", vargs);
    const auto v = read_ready_file(
        dir_ / "ventilator.ready", {"workers", "control"}, *ventilator_, ready_timeout);
    workers_endpoint_ = v["workers"].get<std::string>();
    control_endpoint_ = v["control"].get<std::string>();

    std::vector<std::string> sargs = {
        "--results-bind",
        "tcp://127.0.0.1:*",
        "--control",
        control_endpoint_,
        "--output",
        output_.string(),
        "--expect",
        std::to_string(opts_.expect),
        "--stats-file",
        stats_file_.string(),
        "--ready-file",
        (dir_ / "sink.ready").string(),
    };
    sargs.insert(sargs.end(), opts_.sink_flags.begin(), opts_.sink_flags.end());
    start("sink", "sink.log", sargs);
    const auto s = read_ready_file(dir_ / "sink.ready", {"results"}, *sink_, ready_timeout);
    results_endpoint_ = s["results"].get<std::string>();

    for (std::uint32_t i = 0; i < opts_.workers; ++i) {
        add_worker();
    }
    // Tests reason about which worker holds what: start them only once all are registered.
    if (opts_.workers > 0) {
        const auto want = opts_.workers;
        wait_for_status(
            [want](const nlohmann::json& j) {
                return j.value("workers_alive", std::uint64_t{0}) >= want;
            },
            "all " + std::to_string(want) + " workers registered",
            ready_timeout);
    }
}

namespace {

/// SIGTERM to every process of a group at once (their grace periods overlap), then SIGKILL
/// to whatever is still running when the grace is over. All are reaped.
void stop_group(const std::vector<child_process*>& group) {
    for (auto* p : group) {
        p->signal(SIGCONT);  // a stopped process cannot act on SIGTERM
        p->signal(SIGTERM);
    }
    const auto deadline = steady::now() + stop_grace;
    for (auto* p : group) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
        if (!p->wait_for_exit(std::max(left, std::chrono::milliseconds(0)))) {
            p->kill_and_reap();
        }
    }
}

}  // namespace

void stop_pipeline(const std::vector<std::unique_ptr<child_process>>& workers,
                   child_process* sink,
                   child_process* ventilator) {
    // Workers first, while the sink and the ventilator can still take their last results and
    // reports: a draining worker whose sink is gone waits out its whole drain timeout.
    std::vector<child_process*> group;
    for (const auto& w : workers) {
        group.push_back(w.get());
    }
    stop_group(group);
    group.clear();
    for (auto* p : {sink, ventilator}) {
        if (p != nullptr) {
            group.push_back(p);
        }
    }
    stop_group(group);
}

pipeline::~pipeline() {
    stop_pipeline(workers_, sink_.get(), ventilator_.get());
}

child_process& pipeline::start(const std::string& program,
                               const std::string& log_name,
                               std::vector<std::string> args) {
    args.push_back("--log-level");
    args.push_back(opts_.log_level);
    spawn_options so;
    so.program = program_path(program);
    so.args = std::move(args);
    so.stdout_path = dir_ / log_name;
    auto child = std::make_unique<child_process>(std::move(so));
    auto& ref = *child;
    if (program == "ventilator") {
        ventilator_ = std::move(child);
    } else if (program == "sink") {
        sink_ = std::move(child);
    } else {
        workers_.push_back(std::move(child));
    }
    return ref;
}

child_process& pipeline::add_worker(const std::vector<std::string>& extra_flags) {
    const auto n = worker_seq_++;
    std::vector<std::string> args = {
        "--ventilator",
        workers_endpoint_,
        "--sink",
        results_endpoint_,
        "--handler",
        opts_.worker.handler,
        "--concurrency",
        std::to_string(opts_.worker.concurrency),
        "--name",
        "w" + std::to_string(n),
    };
    args.insert(args.end(), opts_.worker.extra_flags.begin(), opts_.worker.extra_flags.end());
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    return start("worker", "worker-" + std::to_string(n) + ".log", std::move(args));
}

nlohmann::json status_json(const command_result& r,
                           const std::function<std::string()>& diagnostics) {
    if (!r.status.success()) {
        throw std::runtime_error("taskvent status failed (" + r.status.describe() + "): " + r.err +
                                 "\n" + diagnostics());
    }
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_object()) {
        throw std::runtime_error("taskvent status --json printed no JSON object: " + r.out);
    }
    return j;
}

nlohmann::json poll_status(const std::function<nlohmann::json()>& status,
                           const std::function<bool(const nlohmann::json&)>& pred,
                           const std::string& what,
                           std::chrono::milliseconds timeout,
                           const std::function<std::string()>& diagnostics,
                           std::chrono::milliseconds interval) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
        auto j = status();
        if (pred(j)) {
            return j;
        }
        if (steady::now() >= deadline) {
            throw std::runtime_error("waited " + std::to_string(timeout.count()) + " ms for " +
                                     what + "; last status " + j.dump() + "\n" + diagnostics());
        }
        std::this_thread::sleep_for(interval);
    }
}

exit_status wait_for_exit_of_sink(child_process& sink,
                                  std::chrono::milliseconds timeout,
                                  const std::function<nlohmann::json()>& status,
                                  const std::function<std::string()>& diagnostics) {
    if (auto s = sink.wait_for_exit(timeout)) {
        return *s;
    }
    std::string last_status;
    try {
        last_status = status().dump();
    } catch (const std::exception& e) {
        last_status = e.what();
    }
    throw std::runtime_error("the sink did not exit within " + std::to_string(timeout.count()) +
                             " ms; ventilator status " + last_status + "\n" + diagnostics());
}

nlohmann::json read_sink_stats(const std::filesystem::path& path) {
    auto j = nlohmann::json::parse(read_file(path), nullptr, false);
    if (!j.is_object()) {
        throw std::runtime_error("sink stats file " + path.string() + " is not JSON");
    }
    return j;
}

std::vector<child_process*> pipeline::live_workers() {
    std::vector<child_process*> out;
    for (auto& w : workers_) {
        if (w->running()) {
            out.push_back(w.get());
        }
    }
    return out;
}

command_result pipeline::submit(const std::filesystem::path& tasks_file,
                                const std::vector<std::string>& extra_args,
                                std::chrono::milliseconds timeout) {
    std::vector<std::string> args = {"submit", tasks_file.string(), "--control", control_endpoint_};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    return run_command(dir_, "submit", program_path("taskvent"), std::move(args), timeout);
}

nlohmann::json pipeline::status() {
    const auto r = run_command(dir_,
                               "status",
                               program_path("taskvent"),
                               {"status",
                                "--json",
                                "--control",
                                control_endpoint_,
                                "--timeout-ms",
                                std::to_string(status_timeout_ms)},
                               std::chrono::milliseconds(status_timeout_ms + 10000));
    return status_json(r, [this] { return diagnostics(); });
}

nlohmann::json pipeline::wait_for_status(const std::function<bool(const nlohmann::json&)>& pred,
                                         const std::string& what,
                                         std::chrono::milliseconds timeout) {
    return poll_status(
        [this] { return status(); }, pred, what, timeout, [this] { return diagnostics(); });
}

exit_status pipeline::wait_for_sink_exit(std::chrono::milliseconds timeout) {
    return wait_for_exit_of_sink(
        *sink_, timeout, [this] { return status(); }, [this] { return diagnostics(); });
}

nlohmann::json pipeline::sink_stats() const {
    return read_sink_stats(stats_file_);
}

std::string pipeline::diagnostics(std::size_t lines) {
    std::string out;
    auto describe = [&](child_process& p, const std::string& label) {
        const bool alive = p.running();
        out += fmt::format("--- {} pid={} {} log={}\n",
                           label,
                           p.pid(),
                           alive ? "running" : p.status()->describe(),
                           p.log_path().string());
        out += p.log_tail(lines);
    };
    if (ventilator_) {
        describe(*ventilator_, "ventilator");
    }
    if (sink_) {
        describe(*sink_, "sink");
    }
    for (auto& w : workers_) {
        // Killed workers were killed on purpose; their logs would drown the rest.
        if (w->running() || (w->status() && w->status()->exited && w->status()->code != 0)) {
            describe(*w, w->log_path().filename().string());
        }
    }
    return out;
}

}  // namespace taskvent::testing
