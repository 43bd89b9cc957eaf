// taskvent: submit tasks, show the ventilator's status, check a results file.
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <thread>

#include "taskvent/cli.hpp"
#include "taskvent/client/client.hpp"

namespace {

using namespace taskvent;
using steady = std::chrono::steady_clock;

/// Follows the session until every accepted task has its record. A progress bar on a
/// terminal, a plain line every few seconds otherwise. Rates and the final `seconds` count
/// from `submitted_at`, when the first batch went out.
int wait_for_session(zmq::context_t& ctx,
                     const std::string& control,
                     const client::submit_outcome& sub,
                     std::chrono::milliseconds timeout,
                     steady::time_point submitted_at) {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    const auto start = steady::now();
    auto last_line = start - std::chrono::hours(1);
    auto last_answer = start;
    bool lost_session = false;
    for (;;) {
        auto json =
            client::fetch_status(ctx, control, sub.session, std::chrono::milliseconds(2000));
        const auto now = steady::now();
        if (!json) {
            if (now - last_answer > std::chrono::seconds(30)) {
                std::cerr << "taskvent: the ventilator at " << control
                          << " has not answered for 30 s; giving up the wait (tasks stay queued)\n";
                return 1;
            }
            continue;
        }
        last_answer = now;
        const auto j = nlohmann::json::parse(*json);
        auto accepted = j["session"].value("accepted", 0ULL);
        auto finished = j["session"].value("finished", 0ULL);
        if (accepted < sub.accepted) {
            // The ventilator restarted and forgot this session (its journal keeps tasks,
            // not sessions): follow the whole table until nothing is left to do.
            if (!lost_session) {
                std::cerr
                    << "taskvent: the ventilator restarted; waiting until it has no task left\n";
                lost_session = true;
            }
            accepted = sub.accepted;
            const auto live = j.value("live", 0ULL);
            finished = live >= accepted ? 0 : accepted - live;
        }
        const double secs = std::chrono::duration<double>(now - submitted_at).count();
        // A rate over the first instants of a run means nothing; show one after half a second.
        const double rate = secs > 0.5 ? static_cast<double>(finished) / secs : 0.0;
        const bool done = finished >= accepted;
        if (tty) {
            constexpr int width = 40;
            const double frac =
                accepted == 0 ? 1.0 : static_cast<double>(finished) / static_cast<double>(accepted);
            const int filled = static_cast<int>(frac * width);
            std::cerr << fmt::format("\r[{}{}] {}/{} {:.0f} tasks/s  workers {}   ",
                                     std::string(static_cast<std::size_t>(filled), '#'),
                                     std::string(static_cast<std::size_t>(width - filled), '.'),
                                     finished,
                                     accepted,
                                     rate,
                                     j.value("workers_alive", 0ULL));
            if (done) {
                std::cerr << '\n';
            }
        } else if (done || now - last_line >= std::chrono::seconds(2)) {
            std::cerr << fmt::format(
                "progress finished={} accepted={} tasks_per_s={:.0f} workers={}\n",
                finished,
                accepted,
                rate,
                j.value("workers_alive", 0ULL));
            last_line = now;
        }
        if (done) {
            // The whole wait is long enough for the final rate, however short it was.
            const double final_rate = secs > 0 ? static_cast<double>(finished) / secs : 0.0;
            std::cout << fmt::format(
                "done tasks={} seconds={:.3f} tasks_per_s={:.0f}\n", finished, secs, final_rate);
            return 0;
        }
        if (timeout.count() > 0 && now - start > timeout) {
            std::cerr << fmt::format(
                "taskvent: {} of {} tasks finished after {} ms; giving up the wait\n",
                finished,
                accepted,
                timeout.count());
            return 1;
        }
        // Each poll is one small request; a short interval ends the wait close to the
        // last record, which `done ... seconds=` and benchmarks built on it rely on.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"taskvent: submit tasks, show status, check results"};
    app.require_subcommand(1);

    std::string control = "tcp://127.0.0.1:5557";
    std::string input = "-";
    bool plain_lines = false;
    bool wait = false;
    std::size_t batch_size = 1000;
    std::uint32_t timeout_ms = 5000;
    std::uint32_t retries = 12;
    std::uint32_t wait_timeout_ms = 0;
    auto* submit = app.add_subcommand("submit", "submit tasks from a file or stdin");
    submit->add_option("input", input, "JSON-lines file of tasks, or - for stdin")
        ->capture_default_str();
    cli::add(*submit, "control", control, "the ventilator's control endpoint");
    submit->add_flag("--lines", plain_lines, "each line is a payload, not JSON");
    submit->add_flag("--wait", wait, "wait until every task has its record");
    cli::add(*submit, "batch-size", batch_size, "tasks per message")->check(CLI::Range(1, 100000));
    cli::add(*submit, "timeout-ms", timeout_ms, "how long to wait for each acknowledgement");
    cli::add(*submit, "retries", retries, "resends of an unacknowledged batch before giving up");
    double rate = 0;
    cli::add(*submit, "rate", rate, "tasks per second to submit at (0: as fast as possible)")
        ->check(CLI::NonNegativeNumber);
    cli::add(
        *submit, "wait-timeout-ms", wait_timeout_ms, "give up --wait after this long (0: never)");

    bool json = false;
    bool ping = false;
    auto* status = app.add_subcommand("status", "show the ventilator's view");
    cli::add(*status, "control", control, "the ventilator's control endpoint");
    status->add_flag("--json", json, "print the raw JSON");
    status->add_flag("--ping", ping, "exit 0 if the ventilator answers (health check)");
    std::uint32_t status_timeout_ms = 2000;
    cli::add(*status, "timeout-ms", status_timeout_ms, "how long to wait for the answer");

    std::string tasks_file;
    std::string results_file;
    auto* check = app.add_subcommand("check", "count lost, unexpected and duplicated records");
    check->add_option("--tasks", tasks_file, "the JSON-lines tasks that were submitted")
        ->required()
        ->check(CLI::ExistingFile);
    check->add_option("--results", results_file, "the sink's output")
        ->required()
        ->check(CLI::ExistingFile);

    CLI11_PARSE(app, argc, argv);

    try {
        zmq::context_t ctx(1);
        if (submit->parsed()) {
            std::vector<protocol::submit_item> items;
            if (input == "-") {
                items = client::read_tasks(std::cin, "stdin", plain_lines);
            } else {
                std::ifstream in(input);
                if (!in) {
                    std::cerr << "taskvent: cannot read " << input << '\n';
                    return 2;
                }
                items = client::read_tasks(in, input, plain_lines);
            }
            client::submit_options opts;
            opts.control = control;
            opts.batch_size = batch_size;
            opts.ack_timeout = std::chrono::milliseconds(timeout_ms);
            opts.retries = retries;
            opts.rate = rate;
            const auto lines = items.size();
            const auto submitted_at = steady::now();
            const auto out = client::submit_tasks(ctx, opts, std::move(items));
            if (!out.ok()) {
                std::cerr << "taskvent: " << out.error << '\n';
                return 1;
            }
            if (out.resent_unkeyed > 0) {
                std::cerr << fmt::format(
                    "taskvent: warning: {} lines without a key were sent again after a timeout; "
                    "they may have been accepted twice (give each task a key to prevent this)\n",
                    out.resent_unkeyed);
            }
            std::cout << fmt::format(
                "accepted tasks={} duplicate_keys={} lines={} resent_batches={} session={:016x}\n",
                out.accepted,
                out.duplicates,
                lines,
                out.resent_batches,
                out.session);
            std::cout.flush();
            return wait ? wait_for_session(ctx,
                                           control,
                                           out,
                                           std::chrono::milliseconds(wait_timeout_ms),
                                           submitted_at)
                        : 0;
        }
        if (status->parsed()) {
            auto reply =
                client::fetch_status(ctx, control, 0, std::chrono::milliseconds(status_timeout_ms));
            if (!reply) {
                std::cerr << "taskvent: no answer from the ventilator at " << control << " within "
                          << status_timeout_ms << " ms; is it running and is the endpoint right?\n";
                return 1;
            }
            if (ping) {
                std::cout << "ok\n";
            } else if (json) {
                std::cout << *reply << '\n';
            } else {
                std::cout << client::format_status(*reply);
            }
            return 0;
        }
        if (check->parsed()) {
            std::ifstream tasks(tasks_file);
            std::ifstream results(results_file);
            const auto report = client::check_results(tasks, tasks_file, results);
            std::cout << report.summary() << '\n';
            return report.passed() ? 0 : 1;
        }
    } catch (const client::input_error& e) {
        std::cerr << "taskvent: " << e.what() << '\n';
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "taskvent: " << e.what() << '\n';
        return 1;
    }
    return 2;
}
