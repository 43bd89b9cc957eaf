// The worker's I/O thread: registration with the ventilator, credit, reports, heartbeats,
// results to the sink, reconnects, task deadlines and the drain. Handlers run on the
// handler_pool's threads; everything here runs on the thread that called run().
//
// Slots: capacity = concurrency + prefetch. A task holds a slot from the moment it
// arrives until its outcome is settled: reported as a retryable failure, handed back,
// given up at its deadline, or, for ok/failed, its result accepted by the sink socket.
// A hello grants the slots free at that moment; a slot freed is credit returned in the
// next report while held tasks plus credit outstanding stay within the capacity. So the
// ventilator's view of our credit never exceeds what we can hold.
//
// The prefetch adapts between --prefetch and --prefetch-max: enough queued tasks for the
// slots' work over about one credit round trip (prefetch_window), by the running mean of
// the handler's time. Tasks of microseconds would otherwise leave the handlers idle while
// credit travels; tasks of seconds keep the small floor, so nothing is hoarded.
#include "taskvent/worker/worker.hpp"

#include <unistd.h>

#include <zmq.hpp>

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "handler_pool.hpp"
#include "taskvent/clock.hpp"
#include "taskvent/log.hpp"
#include "taskvent/signals.hpp"
#include "taskvent/transport.hpp"
#include "taskvent/worker/backoff.hpp"

namespace taskvent::worker {
namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Heartbeat settings assumed until the ventilator's first welcome says otherwise: they
/// bound how long a hello may go unanswered.
constexpr milliseconds default_heartbeat_interval{1000};
constexpr std::uint32_t default_heartbeat_liveness = 3;
/// Longest the I/O thread sleeps in poll. SIGTERM only sets a flag and may be delivered
/// to a thread other than this one, so the flag is looked at at least this often.
constexpr milliseconds max_poll_wait{100};
/// Results messages are cut at this size: the sink refuses frames over max_frame_bytes.
constexpr std::size_t results_batch_bytes = protocol::max_frame_bytes / 2;
/// Retryable failure reasons travel in reports and end up in dead records; a few KiB
/// says what went wrong without letting one task bloat a report.
constexpr std::size_t max_reason_bytes = 4096;
/// Messages read from the ventilator per loop turn, so that a flood of tasks cannot hold
/// back results, reports and heartbeats.
constexpr int max_reads_per_turn = 256;
/// Work the adaptive prefetch keeps queued per slot: a credit round trip through the
/// ventilator on loopback takes a fraction of this.
constexpr std::chrono::microseconds prefetch_window{2000};
/// Tasks whose handler takes at least this long on average run only once their started
/// ref has left in a report (handler_pool::set_report_before_run).
constexpr double report_before_run_us = 500;
/// Weight of the newest handler time in the running mean that sizes the prefetch.
constexpr double task_time_weight = 1.0 / 64;

/// How long the last report and the bye may take to leave at exit.
constexpr milliseconds bye_linger{2000};
/// Results accepted by the socket must reach the sink even when we exit right after.
constexpr milliseconds results_linger{5000};
/// A stuck handler gets this long after the drain to notice its cancellation.
constexpr milliseconds stuck_grace{1000};

std::string to_hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += digits[b >> 4];
        out += digits[b & 0x0F];
    }
    return out;
}

std::string truncated(std::string s, std::size_t max) {
    if (s.size() > max) {
        s.resize(max);
    }
    return s;
}

enum class link_state { disconnected, registering, welcomed };

/// A task the worker holds a slot for.
struct lease {
    std::shared_ptr<detail::task_run> run;
    std::uint64_t registration = 0;  ///< the registration it was leased under
    steady::time_point deadline = steady::time_point::max();
};

struct pending_result {
    std::uint64_t seq = 0;
    protocol::result_item item;
};

bool empty(const protocol::report& r) {
    return r.credit == 0 && r.started.empty() && r.done.empty() && r.failed.empty() &&
           r.returned.empty();
}

}  // namespace

class worker::impl {
  public:
    impl(worker_config cfg, handler h)
        : cfg_(std::move(cfg)),
          log_(log::get("worker")),
          ok_(registry_.make_counter("taskvent_worker_tasks_ok_total",
                                     "Tasks whose handler returned ok")),
          failed_(registry_.make_counter("taskvent_worker_tasks_failed_total",
                                         "Tasks whose handler failed for good (final)")),
          retried_(registry_.make_counter(
              "taskvent_worker_tasks_retried_total",
              "Tasks reported as retryable failures (handler asked for a retry or threw)")),
          timed_out_(registry_.make_counter("taskvent_worker_tasks_timed_out_total",
                                            "Tasks given up at --task-timeout-ms")),
          returned_(registry_.make_counter("taskvent_worker_tasks_returned_total",
                                           "Unstarted tasks handed back to the ventilator")),
          dropped_(registry_.make_counter(
              "taskvent_worker_tasks_dropped_total",
              "Unstarted tasks dropped when the ventilator was lost (it reissues them)")),
          undelivered_(registry_.make_counter(
              "taskvent_worker_results_undelivered_total",
              "Results the sink had not taken when the drain timed out (reissued)")),
          reconnects_(registry_.make_counter("taskvent_worker_reconnects_total",
                                             "Registrations after the first one")),
          malformed_(
              registry_.make_counter("taskvent_worker_malformed_total",
                                     "Malformed or unexpected messages from the ventilator")),
          handler_ms_(registry_.make_histogram(
              "taskvent_worker_handler_duration_ms",
              "Time spent in the handler per task, in milliseconds",
              {0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 60000})),
          pool_(std::move(h), cfg_.task_timeout),
          backoff_(cfg_.reconnect_min, cfg_.reconnect_max),
          rng_(std::random_device{}()),
          capacity_(cfg_.concurrency + cfg_.prefetch) {
        registry_.make_gauge("taskvent_worker_tasks_held",
                             "Tasks holding a slot: queued, running or awaiting the sink",
                             [this] { return static_cast<double>(held_gauge_.load()); });
        registry_.make_gauge("taskvent_worker_tasks_running", "Tasks inside a handler", [this] {
            return static_cast<double>(running_gauge_.load());
        });
        registry_.make_gauge("taskvent_worker_handlers_stuck",
                             "Handler threads still running a task that was given up",
                             [this] { return static_cast<double>(pool_.stuck()); });
    }

    int run();
    void request_stop() noexcept {
        stop_requested_.store(true);
        pool_.wake();
    }
    const metrics::registry& registry() const noexcept { return registry_; }
    const worker_config& config() const noexcept { return cfg_; }

  private:
    std::optional<int> turn();
    void wait_for_work(steady::time_point now);
    milliseconds poll_timeout(steady::time_point now) const;

    void open_sink();
    void register_now(steady::time_point now);
    void lose_ventilator(steady::time_point now, milliseconds delay, std::string_view why);
    void close_dealer(milliseconds linger);

    void receive(steady::time_point now);
    void on_welcome(const protocol::welcome& w);
    void on_tasks(protocol::tasks&& t);
    void on_malformed(std::error_code ec);

    void take_events();
    void settle(std::unordered_map<std::uint64_t, lease>::iterator it, handler_result&& r);
    void queue_result(const lease& l, protocol::outcome status, std::string body);
    void report_failure(const lease& l, std::string reason);
    void free_slot(std::unordered_map<std::uint64_t, lease>::iterator it);
    bool current(const lease& l) const noexcept {
        return dealer_.has_value() && l.registration == registration_;
    }
    static protocol::lease_ref ref(const lease& l) noexcept {
        return {l.run->item.id, l.run->item.attempt};
    }

    void expire_tasks(steady::time_point now);
    void check_liveness(steady::time_point now);
    void flush_results();
    void flush_report(steady::time_point now);
    void adapt_prefetch();
    /// Lets handler threads run tasks whose started refs have left (see handler_pool).
    void release_started();
    /// Credit for every slot neither held nor already granted.
    void grant_free_slots();
    void heartbeat(steady::time_point now);

    void begin_drain(steady::time_point now);
    std::optional<int> finish_drain(steady::time_point now);
    void give_up_running();
    void say_bye();

    milliseconds silence_limit() const { return heartbeat_interval_ * heartbeat_liveness_; }

    worker_config cfg_;
    std::shared_ptr<spdlog::logger> log_;

    metrics::registry registry_;
    metrics::counter& ok_;
    metrics::counter& failed_;
    metrics::counter& retried_;
    metrics::counter& timed_out_;
    metrics::counter& returned_;
    metrics::counter& dropped_;
    metrics::counter& undelivered_;
    metrics::counter& reconnects_;
    metrics::counter& malformed_;
    metrics::histogram& handler_ms_;
    std::atomic<std::size_t> held_gauge_{0};
    std::atomic<std::size_t> running_gauge_{0};
    std::unique_ptr<metrics::http_server> http_;

    detail::handler_pool pool_;
    reconnect_backoff backoff_;
    std::mt19937_64 rng_;
    log::rate_limiter malformed_limiter_;
    log::rate_limiter anomaly_limiter_;
    std::atomic<bool> stop_requested_{false};

    // Declared before the sockets: the context must outlive them.
    zmq::context_t zmq_{1};
    std::optional<zmq::socket_t> dealer_;  ///< to the ventilator; fresh per registration
    std::optional<zmq::socket_t> sink_;    ///< results PUSH, for the worker's whole life

    link_state state_ = link_state::disconnected;
    std::uint64_t registration_ = 0;  ///< counts hellos; leases remember theirs
    milliseconds heartbeat_interval_ = default_heartbeat_interval;
    std::uint32_t heartbeat_liveness_ = default_heartbeat_liveness;
    steady::time_point last_recv_{};
    steady::time_point last_send_{};
    steady::time_point next_attempt_{};

    std::uint32_t capacity_;  ///< concurrency + the current prefetch
    /// Credit the ventilator may still use: granted (in the hello and in reports, sent or
    /// pending) and not yet used by a task. held + outstanding never exceeds capacity_,
    /// except after the capacity shrank, until enough slots are freed.
    std::uint32_t outstanding_ = 0;
    double mean_task_us_ = -1;  ///< running mean of handler time; negative: none seen yet
    std::uint64_t next_seq_ = 1;
    std::unordered_map<std::uint64_t, lease> leases_;
    // At most `concurrency` entries (plus a few being replaced), so deadlines are found by
    // scanning it; no timer structure is needed at this size.
    std::unordered_set<std::uint64_t> running_;
    std::vector<pending_result> pending_results_;
    protocol::report report_;  ///< accumulates during a loop turn, sent once per turn

    bool draining_ = false;
    steady::time_point drain_deadline_{};
};

int worker::impl::run() {
    try {
        open_sink();
        if (cfg_.metrics_port != 0) {
            http_ = std::make_unique<metrics::http_server>(cfg_.metrics_port, registry_);
            log_->info("metrics port={}", http_->port());
        }
        pool_.start(cfg_.concurrency);
        // The first hello goes out before the loop so that a bad endpoint fails here.
        register_now(steady::now());
    } catch (const std::exception& e) {
        log_->critical("cannot start: {}", e.what());
        pool_.stop(milliseconds(0));
        return 1;
    }
    log_->info(
        "started name={} handler_threads={} capacity={}", cfg_.name, cfg_.concurrency, capacity_);

    int rc = 0;
    for (;;) {
        try {
            if (const auto done = turn()) {
                rc = *done;
                break;
            }
        } catch (const std::exception& e) {
            // Nothing a peer sends gets here (decoders return errors); this is the kernel
            // or libzmq refusing something. Keep serving; the log says what.
            std::uint64_t suppressed = 0;
            if (anomaly_limiter_.allow(suppressed)) {
                log_->error("loop error: {} suppressed={}", e.what(), suppressed);
            }
        }
    }

    pool_.stop(stuck_grace);
    http_.reset();
    sink_.reset();  // lingers up to results_linger to flush what the socket took
    return rc;
}

std::optional<int> worker::impl::turn() {
    const auto now = steady::now();
    if (!draining_ && (stop_requested_.load() || signals::received() != 0)) {
        begin_drain(now);
    }
    if (!dealer_ && !draining_ && now >= next_attempt_) {
        try {
            register_now(now);
        } catch (const zmq::error_t& e) {
            // Out of sockets or file descriptors, say: try again later, not in a tight loop.
            close_dealer(milliseconds(0));
            next_attempt_ = now + backoff_.next();
            log_->error("cannot register: {} retry_in_ms={}",
                        e.what(),
                        std::chrono::ceil<milliseconds>(next_attempt_ - now).count());
        }
    }

    wait_for_work(now);

    const auto t = steady::now();
    receive(t);
    take_events();
    expire_tasks(t);
    check_liveness(t);
    // Results first: a done ref may only be reported once its result is accepted.
    flush_results();
    flush_report(t);
    release_started();
    heartbeat(t);

    held_gauge_.store(leases_.size());
    running_gauge_.store(running_.size());
    return draining_ ? finish_drain(t) : std::nullopt;
}

milliseconds worker::impl::poll_timeout(steady::time_point now) const {
    auto until = now + max_poll_wait;
    const auto earlier = [&](steady::time_point t) { until = std::min(until, t); };
    if (!dealer_ && !draining_) {
        earlier(next_attempt_);
    }
    if (dealer_) {
        earlier(last_recv_ + silence_limit());
        if (state_ == link_state::welcomed) {
            earlier(last_send_ + heartbeat_interval_);
        }
    }
    for (const auto seq : running_) {
        earlier(leases_.at(seq).deadline);
    }
    if (draining_) {
        earlier(leases_.empty() ? now : drain_deadline_);
    }
    // Rounded up: waking a fraction of a millisecond early would spin until the deadline.
    return std::chrono::ceil<milliseconds>(std::max(until - now, steady::duration::zero()));
}

void worker::impl::wait_for_work(steady::time_point now) {
    zmq::pollitem_t items[3];
    std::size_t n = 0;
    items[n++] = {nullptr, pool_.event_fd(), ZMQ_POLLIN, 0};
    if (dealer_) {
        const bool blocked_report = state_ == link_state::welcomed && !empty(report_);
        items[n++] = {dealer_->handle(),
                      0,
                      static_cast<short>(ZMQ_POLLIN | (blocked_report ? ZMQ_POLLOUT : 0)),
                      0};
    }
    if (!pending_results_.empty()) {
        items[n++] = {sink_->handle(), 0, ZMQ_POLLOUT, 0};
    }
    try {
        zmq::poll(items, n, poll_timeout(now));
    } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) {  // EINTR: a signal; the next turn looks at it
            throw;
        }
    }
}

void worker::impl::open_sink() {
    transport::socket_options o;
    o.linger = results_linger;
    // IMMEDIATE: with no sink connected a send would-blocks instead of piling results up in
    // memory; we then hold them, grant no credit, and so stop taking work until it is back.
    o.immediate = true;
    o.send_hwm = 1000;  // messages, each a batch; enough to keep the pipe full
    o.reconnect_ivl_max = milliseconds(1000);
    sink_.emplace(transport::make_socket(zmq_, zmq::socket_type::push, o));
    sink_->connect(cfg_.sink);
}

void worker::impl::register_now(steady::time_point now) {
    close_dealer(milliseconds(0));
    ++registration_;
    if (registration_ > 1) {
        reconnects_.inc();
    }

    // A fresh socket with a fresh routing id: the ventilator sees a new peer, and nothing
    // queued for the old registration can leak into this one. Zero-led ids are reserved
    // by libzmq for the ones it generates.
    transport::socket_options o;
    o.routing_id.resize(16);
    for (auto& c : o.routing_id) {
        c = static_cast<char>(rng_() & 0xFF);
    }
    if (o.routing_id[0] == '\0') {
        o.routing_id[0] = '\x01';
    }
    // Not IMMEDIATE: the hello waits in the pipe until the connection is up.
    o.immediate = false;
    dealer_.emplace(transport::make_socket(zmq_, zmq::socket_type::dealer, o));
    dealer_->connect(cfg_.ventilator);

    const auto free_slots =
        capacity_ > leases_.size() ? static_cast<std::uint32_t>(capacity_ - leases_.size()) : 0U;
    outstanding_ = free_slots;
    const protocol::hello h{.name = cfg_.name,
                            .concurrency = cfg_.concurrency,
                            .credit = free_slots,
                            .pid = static_cast<std::uint32_t>(::getpid())};
    (void)transport::send(*dealer_, h);
    state_ = link_state::registering;
    last_recv_ = now;
    last_send_ = now;
    report_ = {};
    log_->debug("hello ventilator={} routing_id={} credit={} registration={}",
                cfg_.ventilator,
                to_hex(o.routing_id),
                free_slots,
                registration_);
}

void worker::impl::close_dealer(milliseconds linger) {
    if (dealer_) {
        dealer_->set(zmq::sockopt::linger, static_cast<int>(linger.count()));
        dealer_.reset();
    }
    state_ = link_state::disconnected;
}

void worker::impl::lose_ventilator(steady::time_point now,
                                   milliseconds delay,
                                   std::string_view why) {
    close_dealer(milliseconds(0));
    // Unstarted tasks belong to a lease the ventilator will reissue when it declares this
    // registration dead; running ones finish, and their results still go to the sink.
    std::size_t dropped = 0;
    for (const auto& run : pool_.take_queued()) {
        dropped += leases_.erase(run->seq);
    }
    dropped_.inc(dropped);
    report_ = {};
    next_attempt_ = now + delay;
    log_->info("lost ventilator reason={} dropped_unstarted={} running={} reconnect_in_ms={}",
               why,
               dropped,
               running_.size(),
               delay.count());
}

void worker::impl::receive(steady::time_point now) {
    for (int i = 0; dealer_ && i < max_reads_per_turn; ++i) {
        auto in = transport::receive(*dealer_, false);
        if (!in) {
            return;
        }
        if (!in->msg) {
            on_malformed(in->msg.error());
            continue;
        }
        last_recv_ = now;  // any well-formed message shows the ventilator is alive
        auto& m = in->msg.value();
        if (const auto* w = std::get_if<protocol::welcome>(&m)) {
            on_welcome(*w);
        } else if (auto* t = std::get_if<protocol::tasks>(&m)) {
            on_tasks(std::move(*t));
        } else if (std::holds_alternative<protocol::heartbeat>(m)) {
            // liveness only
        } else if (const auto* r = std::get_if<protocol::reset>(&m)) {
            lose_ventilator(now, milliseconds(0), fmt::format("reset ({})", r->reason));
        } else if (const auto* e = std::get_if<protocol::error>(&m)) {
            std::uint64_t suppressed = 0;
            if (anomaly_limiter_.allow(suppressed)) {
                log_->warn("ventilator refused a message code={} text={} suppressed={}",
                           e->code,
                           e->text,
                           suppressed);
            }
        } else {
            on_malformed(errc::unexpected_message);
        }
    }
}

void worker::impl::on_malformed(std::error_code ec) {
    malformed_.inc();
    std::uint64_t suppressed = 0;
    if (malformed_limiter_.allow(suppressed)) {
        log_->warn(
            "malformed message from ventilator error={} suppressed={}", ec.message(), suppressed);
    }
}

void worker::impl::on_welcome(const protocol::welcome& w) {
    heartbeat_interval_ = w.heartbeat_interval_ms > 0 ? milliseconds(w.heartbeat_interval_ms)
                                                      : default_heartbeat_interval;
    heartbeat_liveness_ =
        w.heartbeat_liveness > 0 ? w.heartbeat_liveness : default_heartbeat_liveness;
    if (state_ != link_state::registering) {
        return;  // a repeated welcome only updates the settings
    }
    state_ = link_state::welcomed;
    backoff_.reset();
    log_->info("registered worker={} ventilator={} heartbeat_interval_ms={} heartbeat_liveness={}",
               w.worker,
               cfg_.ventilator,
               heartbeat_interval_.count(),
               heartbeat_liveness_);
}

void worker::impl::on_tasks(protocol::tasks&& t) {
    std::vector<std::shared_ptr<detail::task_run>> runs;
    runs.reserve(t.items.size());
    for (auto& item : t.items) {
        const protocol::lease_ref r{item.id, item.attempt};
        if (draining_) {
            report_.returned.push_back(r);
            returned_.inc();
            continue;
        }
        if (outstanding_ == 0) {
            // The ventilator went past our credit. Handing the task back is safe (it does
            // not count as an attempt) and keeps the slots honest.
            std::uint64_t suppressed = 0;
            if (anomaly_limiter_.allow(suppressed)) {
                log_->warn("ventilator sent tasks beyond credit task={} capacity={} suppressed={}",
                           item.id.value,
                           capacity_,
                           suppressed);
            }
            report_.returned.push_back(r);
            returned_.inc();
            continue;
        }
        --outstanding_;
        auto run = std::make_shared<detail::task_run>();
        run->seq = next_seq_++;
        run->item = std::move(item);
        leases_.emplace(run->seq, lease{run, registration_, steady::time_point::max()});
        log_->trace("task queued task={} attempt={}", r.id.value, r.attempt);
        runs.push_back(std::move(run));
    }
    pool_.push(std::move(runs));
}

void worker::impl::take_events() {
    for (auto& ev : pool_.take_events()) {
        const auto it = leases_.find(ev.run->seq);
        if (it == leases_.end()) {
            continue;  // only leases whose outcome is settled leave the map; none post again
        }
        if (ev.what == detail::pool_event::kind::started) {
            it->second.deadline = ev.deadline;
            running_.insert(ev.run->seq);
            if (current(it->second)) {
                report_.started.push_back(ref(it->second));
            }
            continue;
        }
        running_.erase(ev.run->seq);
        handler_ms_.observe_ms(std::chrono::duration<double, std::milli>(ev.elapsed).count());
        const double us = std::chrono::duration<double, std::micro>(ev.elapsed).count();
        mean_task_us_ =
            mean_task_us_ < 0 ? us : mean_task_us_ + (us - mean_task_us_) * task_time_weight;
        settle(it, std::move(*ev.result));
    }
    // A task that kills the process must be known as running before it runs, or it is
    // charged nothing and kills the next worker too. Waiting for the report costs a loop
    // turn of the I/O thread per task: nothing next to tasks of a millisecond or more,
    // most of the throughput for tasks of microseconds, which run without the wait.
    pool_.set_report_before_run(mean_task_us_ < 0 || mean_task_us_ >= report_before_run_us);
    adapt_prefetch();
}

void worker::impl::release_started() {
    // Sent, or nobody to send it to (no registration: the leases are the ventilator's to
    // reissue anyway). Only a report the socket refused holds the handlers back.
    if (empty(report_) || !dealer_ || state_ != link_state::welcomed) {
        pool_.mark_reported();
    }
}

void worker::impl::adapt_prefetch() {
    if (mean_task_us_ < 0 || cfg_.prefetch_max <= cfg_.prefetch) {
        return;
    }
    const double wanted = static_cast<double>(cfg_.concurrency) *
                          static_cast<double>(prefetch_window.count()) /
                          std::max(mean_task_us_, 0.1);
    const auto prefetch = static_cast<std::uint32_t>(std::clamp(
        wanted, static_cast<double>(cfg_.prefetch), static_cast<double>(cfg_.prefetch_max)));
    const auto capacity = cfg_.concurrency + prefetch;
    if (capacity == capacity_) {
        return;
    }
    log_->debug("prefetch {} -> {} mean_task_us={:.1f}",
                capacity_ - cfg_.concurrency,
                prefetch,
                mean_task_us_);
    capacity_ = capacity;
    // Growth is granted at once; a shrink takes effect as slots are freed.
    grant_free_slots();
}

void worker::impl::grant_free_slots() {
    // With no registration the next hello counts the slots; while draining no credit goes
    // out at all.
    if (!dealer_ || draining_) {
        return;
    }
    const std::size_t committed = leases_.size() + outstanding_;
    if (committed < capacity_) {
        const auto room = static_cast<std::uint32_t>(capacity_ - committed);
        report_.credit += room;
        outstanding_ += room;
    }
}

void worker::impl::settle(std::unordered_map<std::uint64_t, lease>::iterator it,
                          handler_result&& r) {
    const auto& l = it->second;
    log_->trace("task finished task={} attempt={} outcome={}",
                l.run->item.id.value,
                l.run->item.attempt,
                static_cast<int>(r.outcome()));
    switch (r.outcome()) {
        case handler_result::kind::ok:
            if (r.text().size() > protocol::max_payload_bytes) {
                // The sink would refuse the whole batch; fail this one task instead.
                failed_.inc();
                queue_result(l,
                             protocol::outcome::failed,
                             fmt::format("result of {} bytes exceeds the {}-byte limit",
                                         r.text().size(),
                                         protocol::max_payload_bytes));
                return;
            }
            ok_.inc();
            queue_result(l, protocol::outcome::ok, std::move(r).text());
            return;
        case handler_result::kind::failed:
            failed_.inc();
            queue_result(
                l, protocol::outcome::failed, truncated(std::move(r).text(), max_reason_bytes));
            return;
        case handler_result::kind::retry:
            retried_.inc();
            report_failure(l, std::move(r).text());
            free_slot(it);
            return;
    }
}

void worker::impl::queue_result(const lease& l, protocol::outcome status, std::string body) {
    auto& item = l.run->item;
    pending_results_.push_back({.seq = l.run->seq,
                                .item = {.id = item.id,
                                         .attempt = item.attempt,
                                         .status = status,
                                         .key = item.key,
                                         .body = std::move(body),
                                         .submitted_ns = item.submitted_ns,
                                         .finished_ns = wall_clock_ns(),
                                         .worker = cfg_.name}});
    // The handler is done with the payload; up to 16 MiB need not wait for the sink.
    std::string().swap(item.payload);
}

void worker::impl::report_failure(const lease& l, std::string reason) {
    if (current(l)) {
        report_.failed.push_back({.id = l.run->item.id,
                                  .attempt = l.run->item.attempt,
                                  .retryable = true,
                                  .reason = truncated(std::move(reason), max_reason_bytes)});
    }
}

void worker::impl::free_slot(std::unordered_map<std::uint64_t, lease>::iterator it) {
    leases_.erase(it);
    grant_free_slots();
}

void worker::impl::expire_tasks(steady::time_point now) {
    if (cfg_.task_timeout.count() == 0 || running_.empty()) {
        return;
    }
    std::vector<std::uint64_t> expired;
    for (const auto seq : running_) {
        if (leases_.at(seq).deadline <= now) {
            expired.push_back(seq);
        }
    }
    for (const auto seq : expired) {
        const auto it = leases_.find(seq);
        if (!pool_.abandon(*it->second.run, /*replace=*/true)) {
            continue;  // it finished just now; its outcome is in the next events
        }
        running_.erase(seq);
        timed_out_.inc();
        std::uint64_t suppressed = 0;
        if (anomaly_limiter_.allow(suppressed)) {
            log_->warn(
                "task timed out task={} attempt={} timeout_ms={} stuck_handlers={} "
                "suppressed={}",
                it->second.run->item.id.value,
                it->second.run->item.attempt,
                cfg_.task_timeout.count(),
                pool_.stuck(),
                suppressed);
        }
        report_failure(it->second,
                       fmt::format("task timed out after {} ms", cfg_.task_timeout.count()));
        free_slot(it);
    }
}

void worker::impl::check_liveness(steady::time_point now) {
    if (!dealer_ || now - last_recv_ < silence_limit()) {
        return;
    }
    const auto why = fmt::format("{} for {} ms",
                                 state_ == link_state::welcomed ? "silent" : "no welcome",
                                 silence_limit().count());
    if (draining_) {
        // No point in registering again only to say bye; results still go to the sink.
        close_dealer(milliseconds(0));
        report_ = {};
        log_->info("lost ventilator while draining reason={}", why);
        return;
    }
    const auto jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    lose_ventilator(now, backoff_.next(jitter), why);
}

void worker::impl::flush_results() {
    while (!pending_results_.empty()) {
        // Usually everything in one message; cut only when it would approach the sink's
        // frame limit.
        std::size_t n = 0;
        std::size_t bytes = 0;
        while (n < pending_results_.size()) {
            const auto& item = pending_results_[n].item;
            const auto size = item.body.size() + item.key.size() + item.worker.size() + 64;
            if (n > 0 && bytes + size > results_batch_bytes) {
                break;
            }
            bytes += size;
            ++n;
        }

        protocol::results msg;
        msg.items.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            msg.items.push_back(std::move(pending_results_[i].item));
        }
        if (transport::send(*sink_, msg) != transport::send_status::sent) {
            for (std::size_t i = 0; i < n; ++i) {
                pending_results_[i].item = std::move(msg.items[i]);
            }
            return;  // kept; POLLOUT on the sink socket wakes us when it can take them
        }
        for (std::size_t i = 0; i < n; ++i) {
            const auto it = leases_.find(pending_results_[i].seq);
            if (it != leases_.end()) {
                if (current(it->second)) {
                    report_.done.push_back(ref(it->second));
                }
                free_slot(it);
            }
        }
        pending_results_.erase(pending_results_.begin(),
                               pending_results_.begin() + static_cast<std::ptrdiff_t>(n));
    }
}

void worker::impl::flush_report(steady::time_point now) {
    if (!dealer_ || state_ != link_state::welcomed || empty(report_)) {
        return;
    }
    if (transport::send(*dealer_, report_) == transport::send_status::sent) {
        report_ = {};
        last_send_ = now;
    }
    // would_block: kept and merged with what the next turns add.
}

void worker::impl::heartbeat(steady::time_point now) {
    if (!dealer_ || state_ != link_state::welcomed || now - last_send_ < heartbeat_interval_) {
        return;
    }
    if (transport::send(*dealer_, protocol::heartbeat{}) == transport::send_status::sent) {
        last_send_ = now;
    }
}

void worker::impl::begin_drain(steady::time_point now) {
    draining_ = true;
    drain_deadline_ = now + cfg_.drain_timeout;
    std::size_t returned = 0;
    for (const auto& run : pool_.take_queued()) {
        const auto it = leases_.find(run->seq);
        if (it == leases_.end()) {
            continue;
        }
        if (current(it->second)) {
            report_.returned.push_back(ref(it->second));
            ++returned;
        }
        leases_.erase(it);
    }
    returned_.inc(returned);
    report_.credit = 0;
    const int sig = signals::received();
    log_->info("draining cause={} returned={} running={} drain_timeout_ms={}",
               sig != 0 ? fmt::format("signal {}", sig) : std::string("stop requested"),
               returned,
               running_.size(),
               cfg_.drain_timeout.count());
}

std::optional<int> worker::impl::finish_drain(steady::time_point now) {
    if (!leases_.empty() && now < drain_deadline_) {
        return std::nullopt;
    }
    if (!leases_.empty()) {
        give_up_running();
    }
    flush_report(now);
    say_bye();
    log_->info("drained ok={} failed={} retried={} timed_out={} returned={}",
               ok_.value(),
               failed_.value(),
               retried_.value(),
               timed_out_.value(),
               returned_.value());
    return 0;
}

void worker::impl::give_up_running() {
    const auto reason = fmt::format("worker stopped: still running after the {} ms drain timeout",
                                    cfg_.drain_timeout.count());
    for (const auto seq : std::vector<std::uint64_t>(running_.begin(), running_.end())) {
        const auto it = leases_.find(seq);
        if (pool_.abandon(*it->second.run, /*replace=*/false)) {
            running_.erase(seq);
            retried_.inc();
            report_failure(it->second, reason);
            leases_.erase(it);
        }
    }
    // Handlers that finished in the meantime: their results still get their chance.
    take_events();
    flush_results();
    if (!leases_.empty()) {
        undelivered_.inc(leases_.size());
        log_->error(
            "drain timed out with results the sink did not take count={}; the "
            "ventilator reissues them",
            leases_.size());
        leases_.clear();
        running_.clear();
        pending_results_.clear();
    }
}

void worker::impl::say_bye() {
    if (state_ != link_state::welcomed) {
        // Never welcomed: most likely nobody is listening, and lingering would only
        // delay the exit.
        close_dealer(milliseconds(0));
        return;
    }
    (void)transport::send(*dealer_, protocol::bye{});
    close_dealer(bye_linger);
}

worker::worker(worker_config cfg, handler h) {
    if (!h) {
        throw std::invalid_argument("worker needs a handler");
    }
    validate(cfg);
    if (cfg.name.empty()) {
        cfg.name = default_worker_name();
    }
    impl_ = std::make_unique<impl>(std::move(cfg), std::move(h));
}

worker::~worker() = default;

int worker::run() {
    return impl_->run();
}

void worker::request_stop() noexcept {
    impl_->request_stop();
}

const metrics::registry& worker::metrics() const noexcept {
    return impl_->registry();
}

const worker_config& worker::config() const noexcept {
    return impl_->config();
}

}  // namespace taskvent::worker
