#include "taskvent/sink/server.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <thread>

#include "taskvent/ready_file.hpp"
#include "taskvent/signals.hpp"

namespace taskvent::sink {
namespace {

/// Messages taken per turn before committing: bounds the time between a result arriving
/// and its confirm leaving, however fast workers push.
constexpr std::size_t max_messages_per_turn = 1024;
/// Results held while the disk refuses writes. Past this the loop stops draining, so
/// workers block on their PUSH instead of the sink growing without bound.
constexpr std::size_t max_pending_items = std::size_t{1} << 16;
/// Ids per confirm message, well inside the receiver's decode limit on array length.
constexpr std::size_t max_confirm_ids = std::size_t{1} << 16;
/// Ids named in a debug line about duplicates; the count says the rest.
constexpr std::size_t max_logged_ids = 16;

transport::socket_options control_options(const server_config& cfg) {
    transport::socket_options opts;
    opts.linger = cfg.close_linger;
    return opts;
}

std::string id_list(const std::vector<task_id>& ids) {
    std::string out;
    for (std::size_t i = 0; i < ids.size() && i < max_logged_ids; ++i) {
        out += (i == 0 ? "" : ",") + std::to_string(ids[i].value);
    }
    return out;
}

double to_ms(std::chrono::nanoseconds d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

server::server(server_config cfg)
    : cfg_(std::move(cfg)),
      log_(log::get("sink")),
      results_total_(registry_.make_counter("taskvent_sink_results_total",
                                            "Results recorded: new task ids written and fsynced")),
      duplicates_total_(registry_.make_counter("taskvent_sink_duplicates_total",
                                               "Results dropped because their task was recorded")),
      malformed_total_(registry_.make_counter("taskvent_sink_malformed_total",
                                              "Malformed or unexpected messages dropped")),
      write_errors_total_(registry_.make_counter("taskvent_sink_write_errors_total",
                                                 "Group commits that failed to write or fsync")),
      confirms_dropped_total_(registry_.make_counter(
          "taskvent_sink_confirms_dropped_total",
          "Confirm messages the control socket refused; the ventilator reissues those ids")),
      fsync_ms_(registry_.make_histogram("taskvent_sink_fsync_ms",
                                         "fdatasync latency per group commit in milliseconds",
                                         {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000})),
      output_(cfg_.output),
      ctx_(1),
      results_(transport::make_socket(ctx_, zmq::socket_type::pull, {})),
      control_(transport::make_socket(ctx_, zmq::socket_type::dealer, control_options(cfg_))) {
    const auto& r = output_.recovery();
    log_->info(
        "recovered records={} from output={} in elapsed_ms={:.1f} ok={} failed={} dead={} "
        "malformed_lines={} duplicate_lines={} torn_bytes={}",
        r.records,
        output_.path(),
        to_ms(r.elapsed),
        output_.counts().ok,
        output_.counts().failed,
        output_.counts().dead,
        r.malformed,
        r.duplicates,
        r.torn_bytes);

    results_.bind(cfg_.results_bind);
    results_endpoint_ = transport::last_endpoint(results_);
    control_.connect(cfg_.control);
    if (cfg_.metrics_port != 0) {
        http_ = std::make_unique<metrics::http_server>(cfg_.metrics_port, registry_);
    }
    log_->info("bound results={} control={} metrics_port={}",
               results_endpoint_,
               cfg_.control,
               http_ ? http_->port() : 0);
    write_ready_file(cfg_.ready_file, {{"results", results_endpoint_}});
}

server::~server() = default;

int server::run() {
    while (!done()) {
        guarded(&server::turn);
    }
    return finish() ? 0 : 1;
}

bool server::done() const {
    return stop_requested_.load(std::memory_order_relaxed) || signals::received() != 0 ||
           (cfg_.expect != 0 && output_.recorded() >= cfg_.expect);
}

void server::guarded(void (server::*step)()) {
    try {
        (this->*step)();
    } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) {
            return;  // a signal interrupted a socket call; done() sees it next
        }
        note_loop_error(e.what());
    } catch (const std::exception& e) {
        note_loop_error(e.what());
    }
}

void server::note_loop_error(std::string_view what) {
    std::uint64_t suppressed = 0;
    if (loop_error_limiter_.allow(suppressed)) {
        log_->error("event loop error={} pending={} suppressed={}; continuing",
                    what,
                    pending_.size(),
                    suppressed);
    }
}

void server::turn() {
    send_hello_if_due();
    wait_for_input();
    flush();
}

void server::flush() {
    drain();
    commit();
}

void server::send_hello_if_due() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_hello_) {
        return;
    }
    next_hello_ = now + cfg_.hello_interval;
    // Refused only while the control pipe is full; the next one goes out in a second.
    if (transport::send(control_, protocol::sink_hello{cfg_.name}) !=
        transport::send_status::sent) {
        log_->trace("sink_hello not sent control={}", cfg_.control);
    }
}

void server::wait_for_input() {
    if (!pending_.empty()) {
        // Retrying a failed write: wait a whole turn rather than spin against the disk.
        std::this_thread::sleep_for(cfg_.poll_timeout);
        return;
    }
    const auto until_hello = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_hello_ - std::chrono::steady_clock::now());
    const auto timeout = std::clamp(until_hello, std::chrono::milliseconds(0), cfg_.poll_timeout);
    zmq::pollitem_t items[] = {{results_.handle(), 0, ZMQ_POLLIN, 0},
                               {control_.handle(), 0, ZMQ_POLLIN, 0}};
    // Interrupted by a signal: nothing to do here, done() sees it before the next turn.
    (void)transport::poll_sockets(items, timeout);
}

void server::drain() {
    std::size_t taken = 0;
    while (taken < max_messages_per_turn && pending_.size() < max_pending_items) {
        auto from_results = transport::receive(results_, false);
        auto from_control = transport::receive(control_, false);
        if (!from_results && !from_control) {
            return;
        }
        if (from_results) {
            take(std::move(*from_results), from::results);
            ++taken;
        }
        if (from_control) {
            take(std::move(*from_control), from::control);
            ++taken;
        }
    }
}

void server::take(transport::incoming in, from socket) {
    if (!in.msg) {
        note_malformed(socket, in.msg.error().message());
        return;
    }
    auto& msg = in.msg.value();
    if (auto* batch = std::get_if<protocol::results>(&msg)) {
        std::move(batch->items.begin(), batch->items.end(), std::back_inserter(pending_));
        return;
    }
    if (socket == from::control && std::holds_alternative<protocol::heartbeat>(msg)) {
        return;
    }
    if (auto* refusal = std::get_if<protocol::error>(&msg); refusal && socket == from::control) {
        std::uint64_t suppressed = 0;
        if (peer_error_limiter_.allow(suppressed)) {
            log_->warn("ventilator refused a message code={} text={} suppressed={}",
                       refusal->code,
                       refusal->text,
                       suppressed);
        }
        return;
    }
    note_malformed(
        socket,
        "unexpected message type=" + std::string(protocol::to_string(protocol::type_of(msg))));
}

void server::commit() {
    if (pending_.empty()) {
        return;
    }
    auto r = output_.append(pending_);

    results_total_.inc(r.recorded.size());
    duplicates_total_.inc(r.duplicates.size());
    duplicates_ += r.duplicates.size();
    if (!r.duplicates.empty()) {
        log_->debug("dropped duplicate results count={} tasks={}",
                    r.duplicates.size(),
                    id_list(r.duplicates));
    }
    if (r.error) {
        note_write_error(r.error);
        // Ids already durable are confirmed below and need no retry; the rest stay.
        std::erase_if(pending_, [&](const auto& item) { return output_.contains(item.id); });
    } else {
        fsync_ms_.observe_ms(to_ms(r.fsync_time));
        pending_.clear();
    }

    r.recorded.insert(r.recorded.end(), r.duplicates.begin(), r.duplicates.end());
    confirm(r.recorded);
}

void server::note_write_error(std::error_code ec) {
    ++write_errors_;
    write_errors_total_.inc();
    std::uint64_t suppressed = 0;
    if (write_error_limiter_.allow(suppressed)) {
        log_->error(
            "cannot write results output={} error={} unwritten={} suppressed={}; not confirmed, "
            "retrying next turn",
            output_.path(),
            ec.message(),
            pending_.size(),
            suppressed);
    }
}

void server::confirm(const std::vector<task_id>& ids) {
    for (std::size_t begin = 0; begin < ids.size(); begin += max_confirm_ids) {
        const auto end = std::min(ids.size(), begin + max_confirm_ids);
        const auto first = ids.begin() + static_cast<std::ptrdiff_t>(begin);
        const protocol::confirm msg{{first, ids.begin() + static_cast<std::ptrdiff_t>(end)}};
        if (transport::send(control_, msg) == transport::send_status::sent) {
            continue;
        }
        confirms_dropped_total_.inc();
        std::uint64_t suppressed = 0;
        if (confirm_limiter_.allow(suppressed)) {
            log_->warn(
                "confirm dropped, control pipe full ids={} control={} suppressed={}; the "
                "ventilator reissues them after its confirm timeout",
                msg.ids.size(),
                cfg_.control,
                suppressed);
        }
    }
}

void server::note_malformed(from socket, std::string_view what) {
    ++malformed_;
    malformed_total_.inc();
    std::uint64_t suppressed = 0;
    if (malformed_limiter_.allow(suppressed)) {
        log_->warn("dropped malformed message socket={} error={} suppressed={}",
                   socket == from::results ? "results" : "control",
                   what,
                   suppressed);
    }
}

bool server::finish() {
    const char* reason = stop_requested_            ? "stop requested"
                         : signals::received() != 0 ? "signal received"
                                                    : "expected tasks recorded";
    log_->info(
        "finishing reason=\"{}\" recorded={} expect={}", reason, output_.recorded(), cfg_.expect);
    guarded(&server::flush);

    const bool flushed = pending_.empty();
    if (!flushed) {
        log_->error(
            "exiting with unwritten={} results; the ventilator reissues them after its "
            "confirm timeout",
            pending_.size());
    }
    write_stats_file();
    const auto s = stats();
    log_->info(
        "final counts recorded={} ok={} failed={} dead={} duplicates={} malformed={} "
        "write_errors={}",
        s.recorded,
        s.ok,
        s.failed,
        s.dead,
        s.duplicates,
        s.malformed,
        s.write_errors);

    // Terminating the context waits up to close_linger for the last confirm to leave.
    http_.reset();
    results_.close();
    control_.close();
    ctx_.close();
    return flushed;
}

sink_stats server::stats() const {
    return {output_.recorded(),
            duplicates_,
            output_.counts().ok,
            output_.counts().failed,
            output_.counts().dead,
            malformed_,
            write_errors_};
}

void server::write_stats_file() const {
    if (cfg_.stats_file.empty()) {
        return;
    }
    const auto s = stats();
    const nlohmann::json doc = {{"recorded", s.recorded},
                                {"duplicates", s.duplicates},
                                {"ok", s.ok},
                                {"failed", s.failed},
                                {"dead", s.dead},
                                {"malformed", s.malformed}};
    const std::string tmp = cfg_.stats_file + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << doc.dump() << '\n';
    out.close();
    if (!out || std::rename(tmp.c_str(), cfg_.stats_file.c_str()) != 0) {
        log_->error("cannot write stats file={}", cfg_.stats_file);
    }
}

}  // namespace taskvent::sink
