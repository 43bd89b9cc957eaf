// pipeline_bench: the figures of `script/bench`, measured side by side in one invocation on
// this machine's loopback with the project's own programs:
//   ceiling      raw ZeroMQ PUSH/PULL, one way, 64-byte messages (bench/zmq_ceiling)
//   in memory    taskvent submit --wait -> ventilator -> 4 echo workers -> sink -> confirm
//   journal      the same with the ventilator's journal on (and the journal's size after)
//   latency      submit-to-record p50/p99/p99.9 at about a tenth of the in-memory rate
//   flat cost    the rate of the first M tasks while the ventilator holds a backlog of Q,
//                for a small and a large Q, and its resident memory per queued task
//   scale-out    10 ms sleep tasks on 16 workers x 64 slots, as a share of the ideal rate
// Each throughput figure is the median of --runs runs. Prints a table, or JSON with --json.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "pipeline.hpp"
#include "process.hpp"
#include "taskvent/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using taskvent::testing::pipeline;
using taskvent::testing::pipeline_options;

constexpr std::size_t payload_bytes = 64;
constexpr int e2e_workers = 4;

struct settings {
    std::size_t tasks = 1'000'000;  ///< in memory and journal rows
    std::size_t ceiling_messages = 5'000'000;
    std::size_t small_backlog = 10'000;
    std::size_t large_backlog = 10'000'000;
    std::size_t backlog_measured = 500'000;  ///< tasks timed on top of each backlog
    double latency_seconds = 10;
    std::size_t scale_tasks = 300'000;
    int runs = 3;
    bool json = false;
};

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    const auto n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double seconds_since(steady::time_point start) {
    return std::chrono::duration<double>(steady::now() - start).count();
}

/// Writes `count` tasks of a 64-byte payload. Keyed tasks are JSON lines, as users submit
/// them; keyless ones are bare payload lines (`taskvent submit --lines`), so that a memory
/// figure counts the table alone and not an idempotency key per task.
void write_tasks(const fs::path& path, std::size_t count, bool keyed) {
    std::ofstream out(path, std::ios::trunc | std::ios::binary);
    const std::string payload(payload_bytes, 'x');
    std::string line;
    for (std::size_t i = 0; i < count; ++i) {
        line.clear();
        if (keyed) {
            fmt::format_to(std::back_inserter(line),
                           R"({{"key":"k{}","payload":"{}"}})"
                           "\n",
                           i,
                           payload);
        } else {
            line += payload;
            line += '\n';
        }
        out << line;
    }
    out.close();
    if (!out) {
        throw std::runtime_error("cannot write the task file " + path.string() +
                                 "; is the disk full?");
    }
}

long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    throw std::runtime_error("cannot read the resident memory of pid " + std::to_string(pid));
}

/// A scratch folder per measurement, removed afterwards unless it failed.
class scratch {
  public:
    explicit scratch(const fs::path& parent, const std::string& name)
        : path_(taskvent::make_temp_dir("taskvent-bench-" + name, parent)) {}
    ~scratch() {
        if (std::uncaught_exceptions() > 0) {
            std::cerr << "pipeline_bench: logs of the failed run are in " << path_.string() << '\n';
            return;
        }
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    scratch(const scratch&) = delete;
    scratch& operator=(const scratch&) = delete;
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

void require_success(const taskvent::testing::command_result& r,
                     const std::string& what,
                     pipeline& p) {
    if (!r.status.success()) {
        throw std::runtime_error(what + " failed (" + r.status.describe() + "): " + r.err + '\n' +
                                 p.diagnostics());
    }
}

// ---- the rows ----

double ceiling_once(const settings& s, const fs::path& dir) {
    const auto r = taskvent::testing::run_command(
        dir,
        "ceiling",
        taskvent::testing::program_path("zmq_ceiling"),
        {"--count", std::to_string(s.ceiling_messages), "--size", std::to_string(payload_bytes)},
        600s);
    if (!r.status.success()) {
        throw std::runtime_error("zmq_ceiling failed (" + r.status.describe() + "): " + r.err);
    }
    return nlohmann::json::parse(r.out).at("messages_per_s").get<double>();
}

pipeline_options e2e_options(std::size_t expect) {
    pipeline_options o;
    o.workers = e2e_workers;
    o.expect = expect;
    o.log_level = "warn";
    o.worker.handler = "echo";
    return o;
}

struct e2e_figures {
    double tasks_per_s = 0;
    std::uintmax_t journal_bytes = 0;
};

/// One end-to-end run: submit --wait of the keyed tasks file, timed from the submit's start
/// to its end (every task confirmed by the sink and known done by the ventilator).
e2e_figures e2e_once(const fs::path& parent,
                     const fs::path& tasks_file,
                     std::size_t tasks,
                     bool journal) {
    scratch dir(parent, journal ? "journal" : "memory");
    auto opts = e2e_options(tasks);
    const auto journal_path = dir.path() / "journal";
    if (journal) {
        opts.ventilator_flags = {"--journal", journal_path.string()};
    }
    pipeline p(dir.path(), opts);
    const auto start = steady::now();
    const auto r = p.submit(tasks_file, {"--wait"}, 1800s);
    const double secs = seconds_since(start);
    require_success(r, "taskvent submit --wait", p);
    e2e_figures f;
    f.tasks_per_s = static_cast<double>(tasks) / secs;
    if (journal) {
        f.journal_bytes = fs::file_size(journal_path);
    }
    return f;
}

struct latency_figures {
    double rate = 0;
    std::size_t tasks = 0;
    double p50_ms = 0, p99_ms = 0, p999_ms = 0;
};

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) {
        return 0;
    }
    const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(i, sorted.size() - 1)];
}

/// Submits at `rate` tasks/s in batches of 10 and reads each record's latency_ms: from the
/// ventilator's acceptance of the task to the sink writing its record.
latency_figures latency_once(const settings& s, const fs::path& parent, double rate) {
    scratch dir(parent, "latency");
    latency_figures f;
    f.rate = rate;
    f.tasks = std::max<std::size_t>(1000, static_cast<std::size_t>(rate * s.latency_seconds));
    const auto tasks_file = dir.path() / "tasks.jsonl";
    write_tasks(tasks_file, f.tasks, true);
    pipeline p(dir.path(), e2e_options(f.tasks));
    const auto r = p.submit(
        tasks_file, {"--wait", "--rate", fmt::format("{:.0f}", rate), "--batch-size", "10"}, 1800s);
    require_success(r, "taskvent submit --rate", p);
    const auto sink_end = p.wait_for_sink_exit(60s);
    if (!sink_end.success()) {
        throw std::runtime_error("the sink ended with " + sink_end.describe());
    }
    std::vector<double> latencies;
    latencies.reserve(f.tasks);
    std::ifstream in(p.output_path());
    std::string line;
    while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object() && j.contains("latency_ms") && j["latency_ms"].is_number()) {
            latencies.push_back(j["latency_ms"].get<double>());
        }
    }
    std::sort(latencies.begin(), latencies.end());
    f.p50_ms = percentile(latencies, 0.50);
    f.p99_ms = percentile(latencies, 0.99);
    f.p999_ms = percentile(latencies, 0.999);
    return f;
}

struct backlog_figures {
    std::size_t backlog = 0;
    double tasks_per_s = 0;
    double bytes_per_task = 0;  ///< ventilator resident memory per queued task beyond payload
};

/// Queues backlog + measured keyless tasks with no worker connected, reads the ventilator's
/// resident memory before and after, then starts the workers and times the first `measured`
/// records: the ventilator holds at least `backlog` tasks all the while.
backlog_figures backlog_once(const settings& s,
                             const fs::path& parent,
                             const fs::path& tasks_file,
                             std::size_t backlog) {
    scratch dir(parent, "backlog");
    backlog_figures f;
    f.backlog = backlog;
    const auto total = backlog + s.backlog_measured;
    auto opts = e2e_options(s.backlog_measured);
    opts.workers = 0;
    pipeline p(dir.path(), opts);
    const auto vent = p.ventilator().pid();
    const long before = rss_kib(vent);
    require_success(p.submit(tasks_file, {"--lines"}, 1800s), "taskvent submit of the backlog", p);
    const long after = rss_kib(vent);
    f.bytes_per_task = static_cast<double>(after - before) * 1024.0 / static_cast<double>(total) -
                       static_cast<double>(payload_bytes);

    const auto start = steady::now();
    for (int i = 0; i < e2e_workers; ++i) {
        p.add_worker();
    }
    const auto sink_end = p.wait_for_sink_exit(1800s);
    const double secs = seconds_since(start);
    if (!sink_end.success()) {
        throw std::runtime_error("the sink ended with " + sink_end.describe() + '\n' +
                                 p.diagnostics());
    }
    f.tasks_per_s = static_cast<double>(s.backlog_measured) / secs;
    return f;
}

struct scale_figures {
    int workers = 16;
    int slots = 64;
    double task_ms = 10;
    double tasks_per_s = 0;
    double ideal = 0;
};

scale_figures scale_once(const settings& s, const fs::path& parent) {
    scratch dir(parent, "scale");
    scale_figures f;
    f.ideal = f.workers * f.slots * 1000.0 / f.task_ms;
    const auto tasks_file = dir.path() / "tasks.lines";
    {
        std::ofstream out(tasks_file, std::ios::trunc);
        for (std::size_t i = 0; i < s.scale_tasks; ++i) {
            out << "10\n";
        }
    }
    pipeline_options opts;
    opts.workers = static_cast<std::uint32_t>(f.workers);
    opts.expect = s.scale_tasks;
    opts.log_level = "warn";
    opts.worker.handler = "sleep";
    opts.worker.concurrency = static_cast<std::uint32_t>(f.slots);
    pipeline p(dir.path(), opts);
    const auto start = steady::now();
    const auto r = p.submit(tasks_file, {"--lines", "--wait"}, 1800s);
    const double secs = seconds_since(start);
    require_success(r, "taskvent submit --wait of the sleep tasks", p);
    f.tasks_per_s = static_cast<double>(s.scale_tasks) / secs;
    return f;
}

// ---- the report ----

std::string si(double v) {
    if (v >= 1e6) {
        return fmt::format("{:.2f} M", v / 1e6);
    }
    if (v >= 1e3) {
        return fmt::format("{:.1f} k", v / 1e3);
    }
    return fmt::format("{:.0f}", v);
}

std::string count_words(std::size_t n) {
    return n >= 1'000'000 && n % 1'000'000 == 0 ? fmt::format("{}M", n / 1'000'000)
           : n >= 1000 && n % 1000 == 0         ? fmt::format("{}k", n / 1000)
                                                : std::to_string(n);
}

/// Says what comes next, and writes back what earlier runs left dirty in the page cache:
/// their results and journals would otherwise be flushed during this run and stall the
/// sink's and the journal's fdatasync, measuring the bench instead of the pipeline.
void before_run(const settings& s, const std::string& what) {
    if (!s.json) {
        std::cerr << "pipeline_bench: " << what << '\n';
    }
    ::sync();
}

std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one;
}

}  // namespace

int main(int argc, char** argv) {
    settings s;
    bool quick = false;
    std::string scratch_parent;
    CLI::App app{
        "taskvent end-to-end benchmark: ceiling, throughput, latency, flat cost, "
        "scale-out"};
    app.add_flag("--quick", quick, "small sizes: the whole run in under a minute");
    app.add_flag("--json", s.json, "print one JSON object instead of the table");
    app.add_option("--runs", s.runs, "runs per throughput figure (the median is printed)")
        ->check(CLI::Range(1, 99));
    app.add_option("--tasks", s.tasks, "tasks per end-to-end run")->check(CLI::PositiveNumber);
    app.add_option("--large-backlog", s.large_backlog, "the large queued backlog")
        ->check(CLI::PositiveNumber);
    app.add_option("--scratch", scratch_parent, "folder for the runs' files (default: temp)");
    CLI11_PARSE(app, argc, argv);
    if (quick) {
        s.tasks = std::min<std::size_t>(s.tasks, 100'000);
        s.ceiling_messages = 1'000'000;
        s.large_backlog = std::min<std::size_t>(s.large_backlog, 1'000'000);
        s.backlog_measured = 100'000;
        s.latency_seconds = 3;
        s.scale_tasks = 60'000;
    }

    try {
        const fs::path parent =
            scratch_parent.empty() ? fs::temp_directory_path() : fs::path(scratch_parent);
        scratch top(parent, "run");
        const auto bench_start = steady::now();
        // Read before the bench's own processes raise it: what else was running.
        const auto load_before = load_average();

        before_run(s,
                   fmt::format("ceiling: {} messages of {} bytes x {}",
                               s.ceiling_messages,
                               payload_bytes,
                               s.runs));
        std::vector<double> ceiling;
        for (int i = 0; i < s.runs; ++i) {
            ceiling.push_back(ceiling_once(s, top.path()));
        }

        const auto keyed = top.path() / "tasks.jsonl";
        write_tasks(keyed, s.tasks, true);
        std::vector<double> memory, journal;
        std::vector<double> journal_sizes;
        for (int i = 0; i < s.runs; ++i) {
            before_run(s,
                       fmt::format("end to end, run {} of {}: {} tasks in memory, then with the "
                                   "journal",
                                   i + 1,
                                   s.runs,
                                   s.tasks));
            memory.push_back(e2e_once(top.path(), keyed, s.tasks, false).tasks_per_s);
            const auto j = e2e_once(top.path(), keyed, s.tasks, true);
            journal.push_back(j.tasks_per_s);
            journal_sizes.push_back(static_cast<double>(j.journal_bytes));
        }
        const double peak = median(memory);

        before_run(s, fmt::format("latency at {:.0f} tasks/s", peak / 10));
        const auto lat = latency_once(s, top.path(), peak / 10);

        std::vector<backlog_figures> backlogs;
        for (const auto q : {s.small_backlog, s.large_backlog}) {
            std::vector<double> rates, bytes;
            const auto lines = top.path() / "backlog.lines";
            write_tasks(lines, q + s.backlog_measured, false);
            for (int i = 0; i < s.runs; ++i) {
                before_run(s, fmt::format("flat cost, run {} of {}: {} queued", i + 1, s.runs, q));
                const auto b = backlog_once(s, top.path(), lines, q);
                rates.push_back(b.tasks_per_s);
                bytes.push_back(b.bytes_per_task);
            }
            fs::remove(lines);
            backlogs.push_back({q, median(rates), median(bytes)});
        }

        std::vector<double> scale_rates;
        scale_figures scale;
        for (int i = 0; i < s.runs; ++i) {
            before_run(s, fmt::format("scale-out, run {} of {}", i + 1, s.runs));
            scale = scale_once(s, top.path());
            scale_rates.push_back(scale.tasks_per_s);
        }
        scale.tasks_per_s = median(scale_rates);

        const double ceil = median(ceiling);
        const double with_journal = median(journal);
        const double journal_mib = median(journal_sizes) / (1024.0 * 1024.0);
        const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
        const double took = seconds_since(bench_start);

        if (s.json) {
            nlohmann::json j = {
                {"cores", cores},
                {"runs", s.runs},
                {"seconds", took},
                {"load_average_before", load_before},
                {"ceiling_msgs_per_s", ceil},
                {"tasks", s.tasks},
                {"memory_tasks_per_s", peak},
                {"memory_ratio_to_ceiling", peak / ceil},
                {"journal_tasks_per_s", with_journal},
                {"journal_ratio_to_memory", with_journal / peak},
                {"journal_bytes_after_run", median(journal_sizes)},
                {"latency",
                 {{"rate", lat.rate},
                  {"tasks", lat.tasks},
                  {"p50_ms", lat.p50_ms},
                  {"p99_ms", lat.p99_ms},
                  {"p999_ms", lat.p999_ms}}},
                {"backlog_measured_tasks", s.backlog_measured},
                {"scale_out",
                 {{"workers", scale.workers},
                  {"slots", scale.slots},
                  {"task_ms", scale.task_ms},
                  {"tasks", s.scale_tasks},
                  {"tasks_per_s", scale.tasks_per_s},
                  {"ideal_tasks_per_s", scale.ideal},
                  {"efficiency", scale.tasks_per_s / scale.ideal}}},
            };
            for (const auto& b : backlogs) {
                j["backlog"].push_back({{"queued", b.backlog},
                                        {"tasks_per_s", b.tasks_per_s},
                                        {"bytes_per_queued_task", b.bytes_per_task}});
            }
            std::cout << j.dump(2) << '\n';
            return 0;
        }

        const auto& small = backlogs.front();
        const auto& large = backlogs.back();
        std::cout << fmt::format(
            "taskvent benchmark: {} cores, median of {} run(s), {:.0f} s, load average {} before "
            "it began\n\n",
            cores,
            s.runs,
            took,
            load_before);
        const auto row =
            [](const std::string& what, const std::string& figure, const std::string& note) {
                std::cout << fmt::format("| {:<36} | {:>18} | {:<46} |\n", what, figure, note);
            };
        row("measurement", "figure", "note");
        std::cout << fmt::format("|{:-<38}|{:->20}|{:-<48}|\n", "", "", "");
        row("ceiling: ZeroMQ PUSH/PULL, 64 B",
            si(ceil) + " msg/s",
            fmt::format("{} messages, one way, loopback", count_words(s.ceiling_messages)));
        row("end to end, in memory",
            si(peak) + " tasks/s",
            fmt::format("{} tasks, 4 echo workers; {:.1f}% of ceiling",
                        count_words(s.tasks),
                        100 * peak / ceil));
        row("end to end, journal on",
            si(with_journal) + " tasks/s",
            fmt::format("{:.0f}% of in memory; journal {:.1f} MiB after",
                        100 * with_journal / peak,
                        journal_mib));
        row("latency p50 / p99 / p99.9",
            fmt::format("{:.2f}/{:.2f}/{:.2f} ms", lat.p50_ms, lat.p99_ms, lat.p999_ms),
            fmt::format("{} tasks at {:.0f}/s, accept to record", lat.tasks, lat.rate));
        for (const auto* b : {&small, &large}) {
            row(fmt::format("flat cost, {} queued", count_words(b->backlog)),
                si(b->tasks_per_s) + " tasks/s",
                fmt::format("{} timed; {:.0f} B/queued task + payload",
                            count_words(s.backlog_measured),
                            b->bytes_per_task));
        }
        row("flat cost, large vs small queue",
            fmt::format("{:.0f}%", 100 * large.tasks_per_s / small.tasks_per_s),
            "throughput kept at the large backlog");
        row(fmt::format(
                "scale-out, {} ms sleep, {}x{} slots", scale.task_ms, scale.workers, scale.slots),
            fmt::format("{:.0f}% of ideal", 100 * scale.tasks_per_s / scale.ideal),
            fmt::format("{} of {} tasks/s", si(scale.tasks_per_s), si(scale.ideal)));
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "pipeline_bench: " << e.what() << '\n';
        return 1;
    }
}
