#include "taskvent/ventilator/server.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "taskvent/ready_file.hpp"
#include "taskvent/signals.hpp"
#include "taskvent/task_lines.hpp"

namespace taskvent::ventilator {
namespace {

/// How many messages one socket may deliver per loop turn before the other gets a turn.
constexpr int max_messages_per_turn = 512;

std::string short_id(const std::string& routing_id) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < std::min<std::size_t>(routing_id.size(), 4); ++i) {
        const auto c = static_cast<unsigned char>(routing_id[i]);
        out += hex[c >> 4];
        out += hex[c & 0xF];
    }
    return out;
}

}  // namespace

/// Figures the loop publishes for the metrics thread, which must not touch the table.
struct server::published {
    std::atomic<std::uint64_t> queued{0}, leased{0}, reported{0}, live{0}, workers{0};
    std::atomic<std::uint64_t> submitted{0}, confirmed{0}, dead{0}, reissued{0}, returned{0},
        retried{0}, confirm_timeouts{0}, stale_acks{0}, workers_joined{0}, workers_dead{0},
        malformed{0}, unroutable{0};
};

namespace {

server_config with_journal_epoch(server_config cfg, const replay_result& replayed) {
    // A journal fixes the epoch: ids continue where they were, and the sink's record of
    // them stays valid.
    if (replayed.epoch != 0) {
        cfg.table.epoch = replayed.epoch;
    }
    return cfg;
}

}  // namespace

server::server(server_config cfg, zmq::context_t& ctx)
    : replayed_(cfg.journal_path.empty() ? replay_result{} : journal::replay(cfg.journal_path)),
      cfg_(with_journal_epoch(std::move(cfg), replayed_)),
      log_(log::get("ventilator")),
      workers_(transport::make_socket(ctx, zmq::socket_type::router, {})),
      control_(transport::make_socket(ctx, zmq::socket_type::router, {})),
      table_(cfg_.table, clock_),
      liveness_(clock_, cfg_.heartbeat_interval * cfg_.heartbeat_liveness),
      published_(std::make_unique<published>()) {
    try {
        workers_.bind(cfg_.workers_bind);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cannot bind workers socket to " + cfg_.workers_bind + ": " +
                                 e.what());
    }
    try {
        control_.bind(cfg_.control_bind);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cannot bind control socket to " + cfg_.control_bind + ": " +
                                 e.what());
    }
    workers_endpoint_ = transport::last_endpoint(workers_);
    control_endpoint_ = transport::last_endpoint(control_);
    started_at_ = clock_.now();
    rate_sample_at_ = started_at_;

    open_journal();
    load_tasks_file();

    auto gauge = [this](const char* name, const char* help, std::atomic<std::uint64_t>& v) {
        metrics_.make_gauge(name, help, [&v] { return static_cast<double>(v.load()); });
    };
    auto& p = *published_;
    gauge("taskvent_ventilator_queued", "Tasks waiting for a worker", p.queued);
    gauge("taskvent_ventilator_leased", "Tasks leased to workers", p.leased);
    gauge("taskvent_ventilator_reported", "Tasks awaiting the sink's confirmation", p.reported);
    gauge("taskvent_ventilator_live_tasks", "Tasks accepted and not yet done", p.live);
    gauge("taskvent_ventilator_workers_alive", "Registered workers", p.workers);
    gauge("taskvent_ventilator_submitted_total", "Tasks accepted", p.submitted);
    gauge("taskvent_ventilator_done_total", "Tasks confirmed by the sink", p.confirmed);
    gauge("taskvent_ventilator_dead_total", "Tasks recorded dead", p.dead);
    gauge("taskvent_ventilator_reissues_total", "Tasks reissued", p.reissued);
    gauge(
        "taskvent_ventilator_returned_total", "Tasks handed back by draining workers", p.returned);
    gauge("taskvent_ventilator_retries_total", "Retryable failures retried", p.retried);
    gauge("taskvent_ventilator_confirm_timeouts_total",
          "Reported tasks reissued for want of a confirmation",
          p.confirm_timeouts);
    gauge(
        "taskvent_ventilator_stale_acks_total", "Acks for leases no longer current", p.stale_acks);
    gauge("taskvent_ventilator_workers_joined_total", "Worker registrations", p.workers_joined);
    gauge("taskvent_ventilator_workers_dead_total", "Workers declared dead", p.workers_dead);
    gauge("taskvent_ventilator_malformed_total", "Malformed messages dropped", p.malformed);
    gauge("taskvent_ventilator_unroutable_total", "Sends to peers that had gone", p.unroutable);
    if (cfg_.metrics_port != 0) {
        metrics_server_ = std::make_unique<metrics::http_server>(cfg_.metrics_port, metrics_);
    }

    write_ready_file(cfg_.ready_file,
                     {{"workers", workers_endpoint_}, {"control", control_endpoint_}});
    log_->info("bound workers={} control={} epoch={}",
               workers_endpoint_,
               control_endpoint_,
               cfg_.table.epoch);
}

server::~server() = default;

void server::open_journal() {
    if (cfg_.journal_path.empty()) {
        return;
    }
    const auto t0 = clock_.now();
    for (auto& [key, id] : replayed_.finished_keys) {
        table_.restore_key(std::move(key), id);
    }
    for (auto& t : replayed_.live) {
        table_.restore(t.id, std::move(t.key), std::move(t.payload), t.submitted_ns);
    }
    table_.skip_to(replayed_.max_seq);
    if (replayed_.truncated_bytes > 0) {
        log_->warn("journal had a torn tail, truncated path={} bytes={}",
                   cfg_.journal_path,
                   replayed_.truncated_bytes);
    }
    journal_ = std::make_unique<journal>(cfg_.journal_path, cfg_.table.epoch);
    journal_->note_seq(replayed_.max_seq);
    compact_at_bytes_ = std::max(cfg_.journal_compact_bytes, 2 * journal_->size_bytes());
    log_->info(
        "journal replayed path={} records={} requeued={} finished_keys={} bytes={} ms={:.1f}",
        cfg_.journal_path,
        replayed_.records,
        replayed_.live.size(),
        replayed_.finished_keys.size(),
        journal_->size_bytes(),
        std::chrono::duration<double, std::milli>(clock_.now() - t0).count());
    replayed_ = {};  // the table owns the tasks now
}

void server::commit_journal() {
    if (!journal_) {
        return;
    }
    const auto now = clock_.now();
    // Acks wait for their commit; done records alone ride along at most every 20 ms.
    if (pending_acks_.empty() &&
        (!journal_->has_pending() || now - last_commit_ < std::chrono::milliseconds(20))) {
        return;
    }
    if (auto ec = journal_->commit()) {
        ++journal_errors_;
        log_->error("journal write failed path={} error=\"{}\"; holding {} acknowledgements",
                    cfg_.journal_path,
                    ec.message(),
                    pending_acks_.size());
        return;
    }
    last_commit_ = now;
    for (auto& [routing_id, ack] : pending_acks_) {
        if (transport::send(control_, ack, routing_id) != transport::send_status::sent) {
            ++unroutable_;
        }
    }
    pending_acks_.clear();
    maybe_compact();
}

void server::maybe_compact() {
    const auto size = journal_->size_bytes();
    // Most of the journal is finished tasks once the live ones take less than half of it.
    const auto live_estimate = table_.live_bytes() + 40 * table_.gauges().live;
    if (size < compact_at_bytes_ || live_estimate * 2 > size) {
        return;
    }
    const auto t0 = clock_.now();
    const auto ec = journal_->rewrite([this](const journal::writer& w) {
        table_.for_each_finished_key(w.finished_key);
        table_.for_each_live(w.accept);
    });
    if (ec) {
        ++journal_errors_;
        log_->error("journal compaction failed path={} error=\"{}\"; keeping the old file",
                    cfg_.journal_path,
                    ec.message());
        compact_at_bytes_ = size * 2;
        return;
    }
    ++compactions_;
    compact_at_bytes_ = std::max(cfg_.journal_compact_bytes, 2 * journal_->size_bytes());
    log_->info("journal compacted path={} bytes_before={} bytes_after={} live={} ms={:.1f}",
               cfg_.journal_path,
               size,
               journal_->size_bytes(),
               table_.gauges().live,
               std::chrono::duration<double, std::milli>(clock_.now() - t0).count());
}

void server::load_tasks_file() {
    if (cfg_.tasks_file.empty()) {
        return;
    }
    std::ifstream in(cfg_.tasks_file);
    if (!in) {
        throw std::runtime_error("cannot read tasks file " + cfg_.tasks_file);
    }
    // Every line is read and checked before any is queued: a bad file queues nothing.
    auto items = read_task_lines(in, cfg_.tasks_file, false);
    std::size_t accepted = 0;
    const auto now_ns = wall_clock_ns();
    for (auto& item : items) {
        const auto r = table_.submit(std::move(item.key), std::move(item.payload), now_ns);
        if (r.duplicate) {
            continue;
        }
        ++accepted;
        if (journal_) {
            const auto v = *table_.view(r.id);
            journal_->append_accept(r.id, v.key, v.payload, v.submitted_ns);
        }
    }
    if (journal_) {
        if (auto ec = journal_->commit()) {
            throw std::runtime_error("cannot write journal " + cfg_.journal_path + ": " +
                                     ec.message());
        }
    }
    log_->info(
        "loaded tasks file={} tasks={} accepted={}", cfg_.tasks_file, items.size(), accepted);
}

std::chrono::milliseconds server::poll_timeout() const {
    auto next = clock_.now() + std::chrono::milliseconds(100);
    if (auto d = table_.next_deadline(); d && *d < next) {
        next = *d;
    }
    if (auto d = liveness_.next_deadline(); d && *d < next) {
        next = *d;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_.now());
    return std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(100));
}

int server::run() {
    log_->info("serving heartbeat_interval_ms={} liveness={} max_attempts={}",
               cfg_.heartbeat_interval.count(),
               cfg_.heartbeat_liveness,
               cfg_.table.max_attempts);
    while (!stop_.load(std::memory_order_relaxed) && signals::received() == 0) {
        zmq::pollitem_t items[] = {{workers_.handle(), 0, ZMQ_POLLIN, 0},
                                   {control_.handle(), 0, ZMQ_POLLIN, 0}};
        if (!transport::poll_sockets(items, poll_timeout())) {
            continue;  // interrupted by a signal: check the stop condition
        }

        // No exception escapes a message handler: a bad message is logged and dropped,
        // and the loop keeps serving everyone else.
        for (int n = 0; n < max_messages_per_turn; ++n) {
            auto in = transport::receive(workers_, true);
            if (!in) {
                break;
            }
            try {
                on_worker_message(*in);
            } catch (const std::exception& e) {
                log_->error("worker message handler failed peer={} error={}",
                            short_id(in->routing_id),
                            e.what());
            }
        }
        for (int n = 0; n < max_messages_per_turn; ++n) {
            auto in = transport::receive(control_, true);
            if (!in) {
                break;
            }
            try {
                on_control_message(*in);
            } catch (const std::exception& e) {
                log_->error("control message handler failed peer={} error={}",
                            short_id(in->routing_id),
                            e.what());
            }
        }

        commit_journal();
        table_.advance();
        for (auto w : liveness_.expire()) {
            declare_dead(w);
        }
        send_records();
        dispatch();
        send_heartbeats();
        publish_metrics();
    }

    if (journal_) {
        pending_acks_.clear();  // unacknowledged: the client retries them
        if (auto ec = journal_->commit()) {
            log_->error("final journal write failed error=\"{}\"", ec.message());
        }
    }
    const auto& c = table_.counters();
    const auto g = table_.gauges();
    log_->info(
        "stopping submitted={} done={} dead={} live={} reissued={} workers_dead={} malformed={}",
        c.submitted,
        c.confirmed,
        c.dead,
        g.live,
        c.reissued,
        c.workers_dead,
        malformed_);
    if (g.live > 0 && !journal_) {
        log_->warn("stopping with live={} tasks not done; without a journal they are lost", g.live);
    }
    return 0;
}

void server::log_malformed(std::string_view socket, const std::string& peer, std::error_code ec) {
    ++malformed_;
    std::uint64_t suppressed = 0;
    if (malformed_log_.allow(suppressed)) {
        log_->warn("dropped malformed message socket={} peer={} error=\"{}\" suppressed={}",
                   socket,
                   short_id(peer),
                   ec.message(),
                   suppressed);
    }
}

void server::on_worker_message(transport::incoming& in) {
    if (!in.msg) {
        log_malformed("workers", in.routing_id, in.msg.error());
        if (in.msg.error() == errc::wrong_version) {
            (void)transport::send(
                workers_,
                protocol::error{
                    static_cast<std::uint32_t>(errc::wrong_version),
                    fmt::format("this ventilator speaks protocol version {}", protocol::version)},
                in.routing_id);
        }
        return;
    }
    auto& msg = in.msg.value();
    if (auto* h = std::get_if<protocol::hello>(&msg)) {
        on_hello(in.routing_id, *h);
        return;
    }

    auto it = by_routing_id_.find(in.routing_id);
    if (it == by_routing_id_.end()) {
        // A worker we declared dead, or one from before a restart: make it register again.
        ++unknown_peers_;
        std::uint64_t suppressed = 0;
        if (unknown_log_.allow(suppressed)) {
            log_->debug("message from unregistered worker peer={} type={} suppressed={}",
                        short_id(in.routing_id),
                        protocol::to_string(protocol::type_of(msg)),
                        suppressed);
        }
        if (!std::holds_alternative<protocol::bye>(msg)) {
            (void)transport::send(
                workers_, protocol::reset{"unknown worker; say hello again"}, in.routing_id);
        }
        return;
    }
    const worker_id w = it->second;
    liveness_.seen(w);

    if (auto* r = std::get_if<protocol::report>(&msg)) {
        for (const auto& ref : r->started) {
            table_.on_started(w, ref);
        }
        for (const auto& ref : r->done) {
            table_.on_reported(w, ref);
        }
        for (const auto& f : r->failed) {
            table_.on_failed(w, f);
        }
        for (const auto& ref : r->returned) {
            table_.on_returned(w, ref);
        }
        table_.add_credit(w, r->credit);
    } else if (std::holds_alternative<protocol::heartbeat>(msg)) {
        // liveness already noted
    } else if (std::holds_alternative<protocol::bye>(msg)) {
        log_->info("worker left worker={} name={}", w.value, table_.worker_name(w));
        table_.remove_worker(w, removal::left);
        forget_worker(w);
    } else {
        log_malformed("workers", in.routing_id, make_error_code(errc::unexpected_message));
    }
}

void server::on_hello(const std::string& routing_id, const protocol::hello& m) {
    if (auto old = by_routing_id_.find(routing_id); old != by_routing_id_.end()) {
        // Same socket says hello again: it lost us and came back. Whatever the old
        // registration held is reissued, as for a dead worker.
        log_->info("worker registered again worker={} name={}", old->second.value, m.name);
        declare_dead(old->second);
    }
    const auto w = table_.add_worker(m.name, m.credit);
    by_routing_id_[routing_id] = w;
    links_[w.value] = {routing_id, clock_.now()};
    liveness_.add(w);
    log_->info("worker joined worker={} name={} pid={} concurrency={} credit={}",
               w.value,
               m.name,
               m.pid,
               m.concurrency,
               m.credit);
    (void)transport::send(
        workers_,
        protocol::welcome{static_cast<std::uint32_t>(cfg_.heartbeat_interval.count()),
                          cfg_.heartbeat_liveness,
                          w.value},
        routing_id);
}

void server::declare_dead(worker_id w) {
    const auto before = table_.counters().reissued;
    const auto name = table_.worker_name(w);
    table_.remove_worker(w, removal::dead);
    forget_worker(w);
    log_->info("worker declared dead worker={} name={} reissued={}",
               w.value,
               name,
               table_.counters().reissued - before);
}

void server::forget_worker(worker_id w) {
    liveness_.remove(w);
    if (auto it = links_.find(w.value); it != links_.end()) {
        by_routing_id_.erase(it->second.routing_id);
        links_.erase(it);
    }
}

void server::on_control_message(transport::incoming& in) {
    if (!in.msg) {
        log_malformed("control", in.routing_id, in.msg.error());
        (void)transport::send(control_,
                              protocol::error{static_cast<std::uint32_t>(in.msg.error().value()),
                                              in.msg.error().message()},
                              in.routing_id);
        return;
    }
    auto& msg = in.msg.value();
    if (auto* s = std::get_if<protocol::submit>(&msg)) {
        on_submit(in.routing_id, *s);
    } else if (auto* c = std::get_if<protocol::confirm>(&msg)) {
        sink_routing_id_ = in.routing_id;
        sink_last_seen_ = clock_.now();
        for (auto id : c->ids) {
            if (table_.on_confirmed(id) && journal_) {
                journal_->append_done(id);
            }
        }
    } else if (auto* sh = std::get_if<protocol::sink_hello>(&msg)) {
        if (sink_routing_id_ != in.routing_id) {
            log_->info("sink connected name={}", sh->name);
        }
        sink_routing_id_ = in.routing_id;
        sink_last_seen_ = clock_.now();
    } else if (auto* sr = std::get_if<protocol::status_request>(&msg)) {
        (void)transport::send(
            control_, protocol::status_reply{status_json(sr->session)}, in.routing_id);
    } else {
        log_malformed("control", in.routing_id, make_error_code(errc::unexpected_message));
        (void)transport::send(control_,
                              protocol::error{static_cast<std::uint32_t>(errc::unexpected_message),
                                              "message type not accepted on the control socket"},
                              in.routing_id);
    }
}

void server::on_submit(const std::string& routing_id, protocol::submit& m) {
    protocol::submit_ack ack;
    ack.batch = m.batch;
    ack.ids.reserve(m.items.size());
    const auto now_ns = wall_clock_ns();
    for (auto& item : m.items) {
        auto r = table_.submit(std::move(item.key), std::move(item.payload), now_ns, m.session);
        ack.ids.push_back(r.id);
        if (r.duplicate) {
            ++ack.duplicates;
        } else if (journal_) {
            const auto v = *table_.view(r.id);
            journal_->append_accept(r.id, v.key, v.payload, v.submitted_ns);
        }
    }
    if (journal_) {
        pending_acks_.emplace_back(routing_id, std::move(ack));  // sent after the commit
        return;
    }
    if (transport::send(control_, ack, routing_id) != transport::send_status::sent) {
        ++unroutable_;  // the client went away; it retries by key if it comes back
    }
}

void server::dispatch() {
    table_.dispatch([this](worker_id w, std::span<const lease_view> batch) {
        auto it = links_.find(w.value);
        if (it == links_.end()) {
            return false;
        }
        protocol::encode_tasks(batch, header_buf_, body_buf_);
        const auto st =
            transport::send_frames(workers_, header_buf_, body_buf_, it->second.routing_id);
        if (st != transport::send_status::sent) {
            ++unroutable_;
            return false;
        }
        it->second.last_sent = clock_.now();
        return true;
    });
}

void server::send_records() {
    if (sink_routing_id_.empty()) {
        return;  // records stay due; their confirm timers bring them back
    }
    auto records = table_.take_records();
    if (records.empty()) {
        return;
    }
    for (const auto& r : records) {
        log_->info("task dead task={} key={} attempts={} reason=\"{}\"",
                   r.id.value,
                   r.key,
                   r.attempt,
                   r.body);
    }
    const auto st =
        transport::send(control_, protocol::results{std::move(records)}, sink_routing_id_);
    if (st != transport::send_status::sent) {
        ++unroutable_;
        log_->warn("sink unreachable; dead records will be sent again after the confirm timeout");
        sink_routing_id_.clear();
    }
}

void server::send_heartbeats() {
    const auto now = clock_.now();
    for (auto& [w, link] : links_) {
        if (now - link.last_sent >= cfg_.heartbeat_interval) {
            (void)transport::send(workers_, protocol::heartbeat{}, link.routing_id);
            link.last_sent = now;
        }
    }
}

void server::publish_metrics() {
    const auto now = clock_.now();
    const auto& c = table_.counters();
    if (now - rate_sample_at_ >= std::chrono::seconds(1)) {
        const double secs = std::chrono::duration<double>(now - rate_sample_at_).count();
        done_per_s_ = static_cast<double>(c.confirmed - rate_sample_done_) / secs;
        rate_sample_at_ = now;
        rate_sample_done_ = c.confirmed;
    }
    const auto g = table_.gauges();
    auto& p = *published_;
    p.queued = g.queued + g.backoff;
    p.leased = g.leased;
    p.reported = g.reported;
    p.live = g.live;
    p.workers = g.workers;
    p.submitted = c.submitted;
    p.confirmed = c.confirmed;
    p.dead = c.dead;
    p.reissued = c.reissued;
    p.returned = c.returned;
    p.retried = c.retried;
    p.confirm_timeouts = c.confirm_timeouts;
    p.stale_acks = c.stale_acks;
    p.workers_joined = c.workers_joined;
    p.workers_dead = c.workers_dead;
    p.malformed = malformed_;
    p.unroutable = unroutable_;
}

std::string server::status_json(std::uint64_t session) {
    const auto& c = table_.counters();
    const auto g = table_.gauges();
    nlohmann::json j = {
        {"queued", g.queued},
        {"backoff", g.backoff},
        {"leased", g.leased},
        {"reported", g.reported},
        {"live", g.live},
        {"workers_alive", g.workers},
        {"submitted", c.submitted},
        {"done", c.confirmed},
        {"dead", c.dead},
        {"reissued", c.reissued},
        {"returned", c.returned},
        {"retried", c.retried},
        {"confirm_timeouts", c.confirm_timeouts},
        {"duplicate_keys", c.duplicate_keys},
        {"stale_acks", c.stale_acks},
        {"workers_joined", c.workers_joined},
        {"workers_dead", c.workers_dead},
        {"malformed", malformed_},
        {"done_per_s", done_per_s_},
        {"sink_connected", !sink_routing_id_.empty()},
        {"journal",
         journal_ ? nlohmann::json{{"path", cfg_.journal_path},
                                   {"bytes", journal_->size_bytes()},
                                   {"compactions", compactions_},
                                   {"errors", journal_errors_}}
                  : nlohmann::json(nullptr)},
        {"uptime_s", std::chrono::duration<double>(clock_.now() - started_at_).count()},
    };
    auto& workers = j["workers"] = nlohmann::json::array();
    for (const auto& w : table_.workers()) {
        workers.push_back({{"name", w.name}, {"held", w.held}, {"credit", w.credit}});
    }
    if (session != 0) {
        const auto p = table_.progress(session);
        j["session"] = {{"accepted", p.accepted}, {"finished", p.finished}};
    }
    return j.dump();
}

}  // namespace taskvent::ventilator
