// table_bench: the ventilator's per-task cost as its queue grows. Holds Q queued tasks,
// then runs a million lease -> report -> confirm cycles with one new submission per
// confirmation, so the table holds Q throughout. Prints tasks/s per Q and the resident
// memory each queued task costs beyond its payload. No sockets: the table alone.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "taskvent/ventilator/task_table.hpp"

namespace {

using namespace taskvent;

long rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return 0;
}

struct figures {
    double tasks_per_s;
    double bytes_per_task;
};

figures run(std::size_t queued, std::size_t cycles, std::size_t payload_bytes) {
    steady_clock_source clock;
    ventilator::table_config cfg;
    cfg.batch_size = 256;
    ventilator::task_table table(cfg, clock);
    const std::string payload(payload_bytes, 'x');

    const long before = rss_kib();
    for (std::size_t i = 0; i < queued; ++i) {
        table.submit({}, payload, 0);
    }
    const long after = rss_kib();
    const double per_task =
        static_cast<double>(after - before) * 1024.0 / static_cast<double>(queued) -
        static_cast<double>(payload_bytes);

    const auto w = table.add_worker("bench", 0);
    std::vector<protocol::lease_ref> leased;
    leased.reserve(cfg.batch_size);
    const auto start = std::chrono::steady_clock::now();
    std::size_t done = 0;
    while (done < cycles) {
        table.add_credit(w, cfg.batch_size);
        leased.clear();
        table.dispatch([&](worker_id, std::span<const ventilator::lease_view> batch) {
            for (const auto& l : batch) {
                leased.push_back({l.id, l.attempt});
            }
            return true;
        });
        for (const auto& ref : leased) {
            table.on_started(w, ref);
            table.on_reported(w, ref);
            table.on_confirmed(ref.id);
            table.submit({}, payload, 0);
        }
        done += leased.size();
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {static_cast<double>(done) / secs, per_task};
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::size_t> depths{10'000, 10'000'000};
    std::size_t cycles = 1'000'000;
    std::size_t payload = 64;
    CLI::App app{"task table cost per task as the queue grows"};
    app.add_option("--queued", depths, "queue depths to hold")->capture_default_str();
    app.add_option("--cycles", cycles, "lease/report/confirm cycles per depth")
        ->capture_default_str();
    app.add_option("--payload-bytes", payload, "payload size")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::printf("[");
    for (std::size_t i = 0; i < depths.size(); ++i) {
        const auto f = run(depths[i], cycles, payload);
        std::printf("%s{\"queued\":%zu,\"tasks_per_s\":%.0f,\"bytes_per_queued_task\":%.1f}",
                    i == 0 ? "" : ",",
                    depths[i],
                    f.tasks_per_s,
                    f.bytes_per_task);
        std::fflush(stdout);
    }
    std::printf("]\n");
    return 0;
}
