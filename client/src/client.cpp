#include "taskvent/client/client.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "taskvent/transport.hpp"

namespace taskvent::client {
namespace {

using steady = std::chrono::steady_clock;

std::uint64_t random_session() {
    std::random_device rd;
    std::uint64_t s = 0;
    while (s == 0) {
        s = (static_cast<std::uint64_t>(rd()) << 32) | rd();
    }
    return s;
}

zmq::socket_t connect_control(zmq::context_t& ctx, const std::string& control) {
    transport::socket_options opts;
    opts.reconnect_ivl_max = std::chrono::milliseconds(1000);
    auto s = transport::make_socket(ctx, zmq::socket_type::dealer, opts);
    try {
        s.connect(control);
    } catch (const zmq::error_t& e) {
        throw input_error(fmt::format("cannot connect to {}: {}", control, e.what()));
    }
    return s;
}

bool wait_readable(zmq::socket_t& s, std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    return zmq::poll(&item, 1, timeout) > 0;
}

}  // namespace

std::vector<protocol::submit_item> read_tasks(std::istream& in,
                                              const std::string& source,
                                              bool plain_lines) {
    return read_task_lines(in, source, plain_lines);
}

submit_outcome submit_tasks(zmq::context_t& ctx,
                            const submit_options& opts,
                            std::vector<protocol::submit_item> items) {
    submit_outcome out;
    out.session = random_session();
    auto sock = connect_control(ctx, opts.control);

    const std::size_t batch_size = std::max<std::size_t>(1, opts.batch_size);
    const std::size_t total = items.size();
    const std::size_t batches = (total + batch_size - 1) / batch_size;
    struct flight {
        steady::time_point sent_at;
        std::uint32_t attempts = 0;
    };
    std::map<std::uint64_t, flight> in_flight;
    std::size_t next = 0;
    std::size_t acked = 0;
    std::string header, body;

    auto send_batch = [&](std::uint64_t b) {
        const auto begin = b * batch_size;
        const auto end = std::min(total, begin + batch_size);
        protocol::submit m;
        m.session = out.session;
        m.batch = b;
        m.items.assign(items.begin() + static_cast<std::ptrdiff_t>(begin),
                       items.begin() + static_cast<std::ptrdiff_t>(end));
        protocol::encode_into(m, header, body);
        // A DEALER queues for a peer not yet connected; a full queue blocks briefly.
        (void)sock.send(zmq::buffer(header), zmq::send_flags::sndmore);
        (void)sock.send(zmq::buffer(body), zmq::send_flags::none);
        auto& f = in_flight[b];
        f.sent_at = steady::now();
        ++f.attempts;
    };

    const auto started = steady::now();
    auto due = [&](std::size_t b) {
        const double at_s = static_cast<double>(b * batch_size) / opts.rate;
        return started +
               std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(at_s));
    };
    while (acked < batches) {
        while (in_flight.size() < std::max<std::size_t>(1, opts.window) && next < batches &&
               (opts.rate <= 0 || steady::now() >= due(next))) {
            send_batch(next++);
        }

        auto wait_for = std::chrono::milliseconds(100);
        if (opts.rate > 0 && next < batches) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(due(next) - steady::now());
            wait_for = std::clamp(left, std::chrono::milliseconds(0), wait_for);
        }
        if (wait_readable(sock, wait_for)) {
            while (auto in = transport::receive(sock, false)) {
                if (!in->msg) {
                    out.error = "ventilator sent a malformed reply: " + in->msg.error().message();
                    return out;
                }
                if (auto* e = std::get_if<protocol::error>(&in->msg.value())) {
                    out.error = "ventilator refused the submission: " + e->text;
                    return out;
                }
                auto* ack = std::get_if<protocol::submit_ack>(&in->msg.value());
                if (ack == nullptr || in_flight.erase(ack->batch) == 0) {
                    continue;  // not ours, or the answer to a batch already acknowledged
                }
                ++acked;
                out.acknowledged_lines += ack->ids.size();
                out.duplicates += ack->duplicates;
                out.accepted += ack->ids.size() - ack->duplicates;
            }
        }

        const auto now = steady::now();
        for (auto& [b, f] : in_flight) {
            if (now - f.sent_at <= opts.ack_timeout) {
                continue;
            }
            if (f.attempts > opts.retries) {
                out.error = fmt::format(
                    "the ventilator at {} did not acknowledge batch {} after {} attempts of {} ms; "
                    "{} of {} lines were acknowledged. Submitting again is safe for lines with a "
                    "key",
                    opts.control,
                    b,
                    f.attempts,
                    opts.ack_timeout.count(),
                    out.acknowledged_lines,
                    total);
                return out;
            }
            // The ventilator may have restarted and lost the batch before its journal
            // commit; keys make the resend safe (an accepted key returns its first id).
            const auto begin = b * batch_size;
            const auto end = std::min(total, begin + batch_size);
            out.resent_unkeyed += static_cast<std::uint64_t>(
                std::count_if(items.begin() + static_cast<std::ptrdiff_t>(begin),
                              items.begin() + static_cast<std::ptrdiff_t>(end),
                              [](const protocol::submit_item& i) { return i.key.empty(); }));
            ++out.resent_batches;
            send_batch(b);
        }
    }
    return out;
}

std::optional<std::string> fetch_status(zmq::context_t& ctx,
                                        const std::string& control,
                                        std::uint64_t session,
                                        std::chrono::milliseconds timeout) {
    auto sock = connect_control(ctx, control);
    const auto f = protocol::encode(protocol::status_request{session});
    (void)sock.send(zmq::buffer(f.header), zmq::send_flags::sndmore);
    (void)sock.send(zmq::buffer(f.body), zmq::send_flags::none);
    const auto deadline = steady::now() + timeout;
    while (steady::now() < deadline) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
        if (!wait_readable(sock, std::max(left, std::chrono::milliseconds(1)))) {
            continue;
        }
        while (auto in = transport::receive(sock, false)) {
            if (in->msg) {
                if (auto* r = std::get_if<protocol::status_reply>(&in->msg.value())) {
                    return r->json;
                }
            }
        }
    }
    return std::nullopt;
}

std::string format_status(const std::string& json) {
    const auto j = nlohmann::json::parse(json);
    auto n = [&](const char* k) { return j.value(k, 0ULL); };
    std::string out;
    out += fmt::format("workers alive    {}\n", n("workers_alive"));
    out += fmt::format("queued           {} (in retry backoff {})\n", n("queued"), n("backoff"));
    out += fmt::format("leased           {}\n", n("leased"));
    out += fmt::format("awaiting sink    {}\n", n("reported"));
    out += fmt::format("done             {} ({:.0f}/s)\n", n("done"), j.value("done_per_s", 0.0));
    out += fmt::format("dead             {}\n", n("dead"));
    out += fmt::format(
        "submitted        {} (duplicate keys {})\n", n("submitted"), n("duplicate_keys"));
    out += fmt::format("reissued         {} (returned {}, retried {}, confirm timeouts {})\n",
                       n("reissued"),
                       n("returned"),
                       n("retried"),
                       n("confirm_timeouts"));
    out += fmt::format("workers dead     {} (joined {})\n", n("workers_dead"), n("workers_joined"));
    out += fmt::format("malformed        {}\n", n("malformed"));
    out += fmt::format("sink             {}\n",
                       j.value("sink_connected", false) ? "connected" : "not connected");
    // A few workers are worth a line each; a big deployment would drown the summary.
    constexpr std::size_t workers_shown = 16;
    const auto workers = j.value("workers", nlohmann::json::array());
    for (std::size_t i = 0; i < workers.size() && i < workers_shown; ++i) {
        const auto& w = workers[i];
        out += fmt::format("  worker {:<24} holds {:>5}, credit {}\n",
                           w.value("name", std::string("?")),
                           w.value("held", 0ULL),
                           w.value("credit", 0ULL));
    }
    if (workers.size() > workers_shown) {
        out += fmt::format("  ... and {} more workers (--json lists all)\n",
                           workers.size() - workers_shown);
    }
    return out;
}

std::string check_report::summary() const {
    return fmt::format(
        "tasks={} records={} lost={} unexpected={} duplicated={} malformed={} ok={} failed={} "
        "dead={}",
        tasks,
        records,
        lost,
        unexpected,
        duplicated,
        malformed,
        ok,
        failed,
        dead);
}

check_report check_results(std::istream& tasks,
                           const std::string& tasks_source,
                           std::istream& results) {
    check_report r;
    const auto items = read_tasks(tasks, tasks_source, false);
    r.tasks = items.size();
    std::unordered_map<std::string, std::uint32_t> expected;  // key -> records seen
    bool keyed = true;
    for (const auto& it : items) {
        if (it.key.empty()) {
            keyed = false;
        }
        expected.emplace(it.key, 0);
    }

    std::unordered_set<std::uint64_t> ids;
    std::string line;
    while (std::getline(results, line)) {
        if (line.empty()) {
            continue;
        }
        ++r.records;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {
            ++r.malformed;
            continue;
        }
        if (!j.is_object() || !j.contains("id") || !j["id"].is_number_unsigned()) {
            ++r.malformed;
            continue;
        }
        const auto st = j.find("status");
        const auto status = st != j.end() && st->is_string() ? st->get<std::string>() : "";
        if (status == "ok") {
            ++r.ok;
        } else if (status == "failed") {
            ++r.failed;
        } else if (status == "dead") {
            ++r.dead;
        }
        if (!ids.insert(j["id"].get<std::uint64_t>()).second) {
            ++r.duplicated;
            continue;
        }
        if (keyed) {
            const auto k = j.find("key");
            auto it = expected.find(k != j.end() && k->is_string() ? k->get<std::string>() : "");
            if (it == expected.end()) {
                ++r.unexpected;
            } else if (++it->second > 1) {
                ++r.duplicated;  // one task recorded under two ids
            }
        }
    }

    if (keyed) {
        for (const auto& [key, seen] : expected) {
            if (seen == 0) {
                ++r.lost;
            }
        }
    } else {
        const auto distinct = static_cast<std::uint64_t>(ids.size());
        r.lost = r.tasks > distinct ? r.tasks - distinct : 0;
        r.unexpected = distinct > r.tasks ? distinct - r.tasks : 0;
    }
    return r;
}

}  // namespace taskvent::client
