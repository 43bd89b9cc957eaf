// The worker against a fake ventilator (ROUTER) and a fake sink (PULL) bound on loopback:
// the protocol exactly as the ventilator and the sink see it. Every wait polls for a
// condition against a generous deadline.
#include <gtest/gtest.h>

#include <unistd.h>

#include <zmq.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "taskvent/protocol.hpp"
#include "taskvent/transport.hpp"
#include "taskvent/worker/worker.hpp"

namespace {

namespace tw = taskvent::worker;
namespace proto = taskvent::protocol;
namespace transport = taskvent::transport;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using taskvent::task_id;

/// Bounds how long a broken worker can hang a test; a passing test takes far less.
constexpr milliseconds patience = 10s;

/// Heartbeat settings that never expire during a test: 1 s x 30.
const proto::welcome relaxed_welcome{
    .heartbeat_interval_ms = 1000, .heartbeat_liveness = 30, .worker = 7};
/// Short settings for the tests about liveness: 50 ms x 3.
const proto::welcome short_welcome{
    .heartbeat_interval_ms = 50, .heartbeat_liveness = 3, .worker = 7};

/// Holds handlers back until the test opens it.
class gate {
  public:
    void open() {
        {
            std::lock_guard lock(mutex_);
            open_ = true;
        }
        cv_.notify_all();
    }
    void wait() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return open_; });
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

struct received {
    std::string from;
    proto::message msg;
};

template <typename T>
bool is(const received& r) {
    return std::holds_alternative<T>(r.msg);
}

/// Plays the ventilator's ROUTER and keeps a log of everything the worker sent.
class fake_ventilator {
  public:
    explicit fake_ventilator(zmq::context_t& ctx)
        : socket_(transport::make_socket(ctx, zmq::socket_type::router, {})) {
        socket_.bind("tcp://127.0.0.1:*");
        endpoint_ = transport::last_endpoint(socket_);
    }

    const std::string& endpoint() const { return endpoint_; }
    const std::vector<received>& log() const { return log_; }
    std::size_t mark() const { return log_.size(); }

    /// Reads one message into the log if one arrives within `timeout`.
    void pump(milliseconds timeout) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, timeout) <= 0) {
            return;
        }
        while (auto in = transport::receive(socket_, true)) {
            EXPECT_TRUE(in->msg.has_value()) << "worker sent " << in->msg.error().message();
            if (in->msg) {
                log_.push_back({in->routing_id, std::move(in->msg).value()});
            }
        }
    }

    /// Reads until `cond` holds; false at the deadline.
    bool wait_until(const std::function<bool()>& cond, milliseconds timeout = patience) {
        const auto deadline = steady::now() + timeout;
        while (!cond()) {
            if (steady::now() >= deadline) {
                return false;
            }
            pump(10ms);
        }
        return true;
    }

    /// The first message logged at or after `since` that satisfies `pred`.
    std::optional<received> wait_for(const std::function<bool(const received&)>& pred,
                                     std::size_t since = 0,
                                     milliseconds timeout = patience) {
        std::optional<received> found;
        wait_until(
            [&] {
                for (std::size_t i = since; i < log_.size(); ++i) {
                    if (pred(log_[i])) {
                        found = log_[i];
                        return true;
                    }
                }
                return false;
            },
            timeout);
        return found;
    }

    void send(const std::string& to, const proto::message& m) {
        EXPECT_EQ(transport::send(socket_, m, to), transport::send_status::sent);
    }

    void send_raw(const std::string& to, std::string_view header, std::string_view body) {
        EXPECT_EQ(transport::send_frames(socket_, header, body, to), transport::send_status::sent);
    }

    /// Everything one registration reported so far, merged into one report.
    proto::report reports_from(const std::string& from) const {
        proto::report total;
        for (const auto& r : log_) {
            if (r.from != from || !is<proto::report>(r)) {
                continue;
            }
            const auto& rep = std::get<proto::report>(r.msg);
            total.credit += rep.credit;
            const auto append = [](auto& to, const auto& from_list) {
                to.insert(to.end(), from_list.begin(), from_list.end());
            };
            append(total.started, rep.started);
            append(total.done, rep.done);
            append(total.failed, rep.failed);
            append(total.returned, rep.returned);
        }
        return total;
    }

    std::size_t count(const std::function<bool(const received&)>& pred) const {
        return static_cast<std::size_t>(std::count_if(log_.begin(), log_.end(), pred));
    }

  private:
    zmq::socket_t socket_;
    std::string endpoint_;
    std::vector<received> log_;
};

/// Plays the sink's PULL.
class fake_sink {
  public:
    fake_sink(zmq::context_t& ctx, const std::string& bind_to)
        : socket_(transport::make_socket(ctx, zmq::socket_type::pull, {})) {
        socket_.bind(bind_to);
        endpoint_ = transport::last_endpoint(socket_);
    }

    const std::string& endpoint() const { return endpoint_; }

    /// Reads until `n` results have arrived in total; false at the deadline.
    bool wait_for_results(std::size_t n, milliseconds timeout = patience) {
        const auto deadline = steady::now() + timeout;
        while (results.size() < n && steady::now() < deadline) {
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
            if (zmq::poll(&item, 1, 10ms) <= 0) {
                continue;
            }
            while (auto in = transport::receive(socket_, false)) {
                EXPECT_TRUE(in->msg.has_value());
                if (in->msg && std::holds_alternative<proto::results>(in->msg.value())) {
                    auto& items = std::get<proto::results>(in->msg.value()).items;
                    results.insert(results.end(), items.begin(), items.end());
                }
            }
        }
        return results.size() >= n;
    }

    const proto::result_item* find(std::uint64_t id) const {
        for (const auto& r : results) {
            if (r.id.value == id) {
                return &r;
            }
        }
        return nullptr;
    }

    std::vector<proto::result_item> results;

  private:
    zmq::socket_t socket_;
    std::string endpoint_;
};

/// A worker whose run() goes on another thread, as main() would run it.
class running_worker {
  public:
    running_worker(tw::worker_config cfg, tw::handler h) : worker_(std::move(cfg), std::move(h)) {
        exit_ = std::async(std::launch::async, [this] { return worker_.run(); });
    }
    ~running_worker() {
        worker_.request_stop();
        if (exit_.valid()) {
            exit_.wait();
        }
    }
    running_worker(const running_worker&) = delete;
    running_worker& operator=(const running_worker&) = delete;

    tw::worker& get() { return worker_; }

    std::optional<int> wait_exit(milliseconds timeout = patience) {
        if (exit_.wait_for(timeout) != std::future_status::ready) {
            return std::nullopt;
        }
        return exit_.get();
    }

    /// A counter or gauge as served on /metrics, or -1 when absent.
    double metric(const std::string& name) const {
        std::istringstream in(worker_.metrics().render());
        for (std::string line; std::getline(in, line);) {
            if (line.rfind(name + " ", 0) == 0) {
                return std::stod(line.substr(name.size() + 1));
            }
        }
        return -1;
    }

  private:
    tw::worker worker_;
    std::future<int> exit_;
};

proto::task_item task(std::uint64_t id, std::string payload, std::uint32_t attempt = 1) {
    return {.id = task_id{id},
            .attempt = attempt,
            .key = "k" + std::to_string(id),
            .payload = std::move(payload),
            .submitted_ns = static_cast<std::int64_t>(1000 + id)};
}

proto::tasks tasks(std::vector<proto::task_item> items) {
    return proto::tasks{std::move(items)};
}

std::vector<std::uint64_t> ids(const std::vector<proto::lease_ref>& refs) {
    std::vector<std::uint64_t> out;
    for (const auto& r : refs) {
        out.push_back(r.id.value);
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool contains(const std::vector<proto::lease_ref>& refs, std::uint64_t id) {
    return std::any_of(refs.begin(), refs.end(), [&](const auto& r) { return r.id.value == id; });
}

tw::handler echo() {
    return [](const tw::task_context& ctx) {
        return tw::handler_result::ok(std::string(ctx.payload));
    };
}

/// Echo, except that payload "block" waits for the gate (ignoring cancellation).
tw::handler blocking_echo(std::shared_ptr<gate> g) {
    return [g](const tw::task_context& ctx) {
        if (ctx.payload == "block") {
            g->wait();
        }
        return tw::handler_result::ok(std::string(ctx.payload));
    };
}

class worker_protocol : public ::testing::Test {
  protected:
    void TearDown() override {
        // Blocked handlers must be let go before the worker drains and is destroyed.
        for (auto& g : gates_) {
            g->open();
        }
        worker_.reset();
    }

    tw::worker_config config() const {
        tw::worker_config cfg;
        cfg.ventilator = ventilator_.endpoint();
        cfg.sink = sink_.endpoint();
        cfg.concurrency = 2;
        cfg.prefetch = 2;
        // Fixed, so that the credit the tests count is exact; adapt_prefetch tests it.
        cfg.prefetch_max = 2;
        cfg.name = "test-worker";
        cfg.reconnect_min = 20ms;
        cfg.reconnect_max = 200ms;
        cfg.drain_timeout = 5s;
        return cfg;
    }

    std::shared_ptr<gate> make_gate() { return gates_.emplace_back(std::make_shared<gate>()); }

    running_worker& start(tw::worker_config cfg, tw::handler h) {
        worker_ = std::make_unique<running_worker>(std::move(cfg), std::move(h));
        return *worker_;
    }

    /// Waits for a hello (from a new routing id, after `since`) and welcomes it.
    std::string register_worker(const proto::welcome& w = relaxed_welcome, std::size_t since = 0) {
        const auto hello = ventilator_.wait_for(is<proto::hello>, since);
        if (!hello) {
            ADD_FAILURE() << "no hello";
            return {};
        }
        ventilator_.send(hello->from, w);
        return hello->from;
    }

    zmq::context_t ctx_{1};
    fake_ventilator ventilator_{ctx_};
    fake_sink sink_{ctx_, "tcp://127.0.0.1:*"};
    std::vector<std::shared_ptr<gate>> gates_;
    std::unique_ptr<running_worker> worker_;
};

}  // namespace

TEST_F(worker_protocol, says_hello_with_credit_of_concurrency_plus_prefetch) {
    auto cfg = config();
    cfg.concurrency = 3;
    cfg.prefetch = 5;
    start(cfg, echo());

    const auto hello = ventilator_.wait_for(is<proto::hello>);
    ASSERT_TRUE(hello);
    const auto& h = std::get<proto::hello>(hello->msg);
    EXPECT_EQ(h.credit, 8u);
    EXPECT_EQ(h.concurrency, 3u);
    EXPECT_EQ(h.name, "test-worker");
    EXPECT_EQ(h.pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_EQ(hello->from.size(), 16u);
}

TEST_F(worker_protocol, runs_tasks_pushes_results_and_reports_done_with_the_credit_back) {
    start(config(), echo());
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "p1"), task(2, "p2"), task(3, "p3"), task(4, "p4")}));

    ASSERT_TRUE(sink_.wait_for_results(4));
    for (std::uint64_t i = 1; i <= 4; ++i) {
        const auto* r = sink_.find(i);
        ASSERT_NE(r, nullptr) << i;
        EXPECT_EQ(r->status, proto::outcome::ok);
        EXPECT_EQ(r->body, "p" + std::to_string(i));
        EXPECT_EQ(r->key, "k" + std::to_string(i));
        EXPECT_EQ(r->attempt, 1u);
        EXPECT_EQ(r->worker, "test-worker");
        EXPECT_EQ(r->submitted_ns, static_cast<std::int64_t>(1000 + i));
        EXPECT_GT(r->finished_ns, 0);
    }
    EXPECT_EQ(sink_.results.size(), 4u);

    ASSERT_TRUE(
        ventilator_.wait_until([&] { return ventilator_.reports_from(id).done.size() >= 4; }));
    const auto rep = ventilator_.reports_from(id);
    const std::vector<std::uint64_t> all{1, 2, 3, 4};
    EXPECT_EQ(ids(rep.started), all);
    EXPECT_EQ(ids(rep.done), all);
    EXPECT_EQ(rep.credit, 4u);
    EXPECT_TRUE(rep.failed.empty());
    EXPECT_TRUE(rep.returned.empty());
    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_ok_total"), 4);
}

TEST_F(worker_protocol, sends_final_failures_to_the_sink_and_retryable_ones_to_the_ventilator) {
    start(config(), [](const tw::task_context& ctx) {
        if (ctx.payload == "fail") {
            return tw::handler_result::failed("bad input");
        }
        if (ctx.payload == "retry") {
            return tw::handler_result::retry("try later");
        }
        if (ctx.payload == "throw") {
            throw std::runtime_error("boom");
        }
        return tw::handler_result::ok("fine");
    });
    const auto id = register_worker();
    ventilator_.send(
        id, tasks({task(1, "ok"), task(2, "fail"), task(3, "retry", 2), task(4, "throw")}));

    ASSERT_TRUE(ventilator_.wait_until([&] {
        const auto rep = ventilator_.reports_from(id);
        return rep.done.size() >= 2 && rep.failed.size() >= 2;
    }));
    const auto rep = ventilator_.reports_from(id);
    EXPECT_EQ(ids(rep.done), (std::vector<std::uint64_t>{1, 2}));
    ASSERT_EQ(rep.failed.size(), 2u);
    auto failed = rep.failed;
    std::sort(
        failed.begin(), failed.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    EXPECT_EQ(failed[0], (proto::failure{task_id{3}, 2, true, "try later"}));
    EXPECT_EQ(failed[1], (proto::failure{task_id{4}, 1, true, "boom"}));
    EXPECT_EQ(rep.credit, 4u);

    ASSERT_TRUE(sink_.wait_for_results(2));
    const auto* ok = sink_.find(1);
    ASSERT_NE(ok, nullptr);
    EXPECT_EQ(ok->status, proto::outcome::ok);
    EXPECT_EQ(ok->body, "fine");
    const auto* final_failure = sink_.find(2);
    ASSERT_NE(final_failure, nullptr);
    EXPECT_EQ(final_failure->status, proto::outcome::failed);
    EXPECT_EQ(final_failure->body, "bad input");
    EXPECT_EQ(sink_.find(3), nullptr);
    EXPECT_EQ(sink_.find(4), nullptr);

    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_ok_total"), 1);
    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_failed_total"), 1);
    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_retried_total"), 2);
}

TEST_F(worker_protocol, heartbeats_when_idle_and_stays_registered_while_the_ventilator_answers) {
    start(config(), echo());
    const auto id = register_worker(short_welcome);

    std::size_t beats = 0;
    auto last_sent = steady::now();
    const auto deadline = steady::now() + patience;
    std::size_t seen = ventilator_.mark();
    while (beats < 5 && steady::now() < deadline) {
        if (steady::now() - last_sent >= 40ms) {
            ventilator_.send(id, proto::heartbeat{});
            last_sent = steady::now();
        }
        ventilator_.pump(10ms);
        for (; seen < ventilator_.log().size(); ++seen) {
            const auto& r = ventilator_.log()[seen];
            beats += r.from == id && is<proto::heartbeat>(r) ? 1 : 0;
        }
    }
    EXPECT_GE(beats, 5u);
    EXPECT_EQ(ventilator_.count(is<proto::hello>), 1u) << "the worker registered again";
}

TEST_F(worker_protocol, reconnects_with_a_fresh_routing_id_after_the_ventilator_goes_silent) {
    auto cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch = 1;
    auto g = make_gate();
    start(cfg, blocking_echo(g));
    const auto first = register_worker(short_welcome);
    ventilator_.send(first, tasks({task(1, "block"), task(2, "queued")}));
    ASSERT_TRUE(ventilator_.wait_until(
        [&] { return contains(ventilator_.reports_from(first).started, 1); }));

    // From here the fake ventilator says nothing: after 3 x 50 ms the worker gives up on it.
    const auto again = ventilator_.wait_for(
        [&](const received& r) { return is<proto::hello>(r) && r.from != first; });
    ASSERT_TRUE(again);
    EXPECT_EQ(again->from.size(), 16u);
    // Task 1 still runs and holds its slot; task 2 was dropped (the ventilator reissues it).
    EXPECT_EQ(std::get<proto::hello>(again->msg).credit, 1u);
    EXPECT_EQ(worker_->metric("taskvent_worker_reconnects_total"), 1);
    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_dropped_total"), 1);

    const auto second = again->from;
    ventilator_.send(second, relaxed_welcome);
    g->open();
    ASSERT_TRUE(sink_.wait_for_results(1));
    EXPECT_EQ(sink_.results[0].id, task_id{1});
    // The old lease is not reported on the new registration, but its slot comes back.
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return ventilator_.reports_from(second).credit >= 1; }));
    EXPECT_TRUE(ventilator_.reports_from(second).done.empty());

    ventilator_.send(second, tasks({task(3, "after")}));
    ASSERT_TRUE(sink_.wait_for_results(2));
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return contains(ventilator_.reports_from(second).done, 3); }));
    EXPECT_EQ(sink_.find(2), nullptr);
}

TEST_F(worker_protocol, says_hello_again_at_once_on_a_fresh_socket_when_reset) {
    auto cfg = config();
    // A backoff longer than the test's patience: only an immediate hello passes.
    cfg.reconnect_min = 60s;
    cfg.reconnect_max = 60s;
    start(cfg, echo());
    const auto first = register_worker();
    const auto since = ventilator_.mark();
    ventilator_.send(first, proto::reset{"unknown worker"});

    const auto again = ventilator_.wait_for(
        [&](const received& r) { return is<proto::hello>(r) && r.from != first; }, since);
    ASSERT_TRUE(again);
    EXPECT_EQ(std::get<proto::hello>(again->msg).credit, 4u);
}

TEST_F(worker_protocol,
       drains_on_request_stop_returning_unstarted_tasks_and_finishing_running_ones) {
    auto cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch = 3;
    auto g = make_gate();
    auto& w = start(cfg, blocking_echo(g));
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "block"), task(2, "b"), task(3, "c"), task(4, "d")}));
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return contains(ventilator_.reports_from(id).started, 1); }));

    w.get().request_stop();
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return ventilator_.reports_from(id).returned.size() >= 3; }));
    EXPECT_EQ(ids(ventilator_.reports_from(id).returned), (std::vector<std::uint64_t>{2, 3, 4}));

    g->open();
    const auto bye = ventilator_.wait_for(is<proto::bye>);
    ASSERT_TRUE(bye);
    EXPECT_EQ(bye->from, id);
    ASSERT_TRUE(sink_.wait_for_results(1));
    EXPECT_EQ(sink_.results.size(), 1u);
    EXPECT_EQ(sink_.results[0].id, task_id{1});

    const auto rep = ventilator_.reports_from(id);
    EXPECT_EQ(ids(rep.done), (std::vector<std::uint64_t>{1}));
    EXPECT_EQ(rep.credit, 0u) << "no credit may go out while draining";
    EXPECT_TRUE(is<proto::bye>(ventilator_.log().back())) << "bye must be the last word";
    EXPECT_EQ(w.wait_exit(), 0);
}

TEST_F(worker_protocol, gives_up_on_a_task_at_its_deadline_and_runs_the_next_on_a_fresh_thread) {
    auto cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch = 0;
    cfg.task_timeout = 200ms;
    auto g = make_gate();
    start(cfg, blocking_echo(g));  // "block" ignores cancellation: a truly stuck handler
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "block")}));

    ASSERT_TRUE(
        ventilator_.wait_until([&] { return !ventilator_.reports_from(id).failed.empty(); }));
    auto rep = ventilator_.reports_from(id);
    EXPECT_EQ(rep.failed[0], (proto::failure{task_id{1}, 1, true, "task timed out after 200 ms"}));
    EXPECT_EQ(rep.credit, 1u) << "the slot comes back with the failure";
    EXPECT_EQ(worker_->metric("taskvent_worker_tasks_timed_out_total"), 1);
    EXPECT_EQ(worker_->metric("taskvent_worker_handlers_stuck"), 1);

    // The only handler thread is stuck; a replacement must run this one.
    ventilator_.send(id, tasks({task(2, "next")}));
    ASSERT_TRUE(sink_.wait_for_results(1));
    EXPECT_EQ(sink_.results[0].id, task_id{2});

    // Let the stuck handler return: its late outcome is discarded, not sent.
    g->open();
    ASSERT_TRUE(ventilator_.wait_until(
        [&] { return worker_->metric("taskvent_worker_handlers_stuck") == 0; }));
    ventilator_.send(id, tasks({task(3, "last")}));
    ASSERT_TRUE(sink_.wait_for_results(2));
    EXPECT_EQ(sink_.find(1), nullptr);
    EXPECT_EQ(sink_.results.size(), 2u);
}

TEST_F(worker_protocol, counts_malformed_messages_from_the_ventilator_and_keeps_serving) {
    start(config(), echo());
    const auto id = register_worker();

    const auto good = proto::encode(proto::tasks{});
    auto wrong_version = good.header;
    wrong_version[2] = static_cast<char>(proto::version + 1);
    ventilator_.send_raw(id, "XX", "");                          // bad header
    ventilator_.send_raw(id, wrong_version, good.body);          // another protocol version
    ventilator_.send_raw(id, good.header, std::string("\xc1"));  // not msgpack
    ventilator_.send(id, proto::sink_hello{"not for workers"});  // not a worker's message
    ventilator_.send(id, tasks({task(1, "still here")}));

    ASSERT_TRUE(sink_.wait_for_results(1));
    EXPECT_EQ(sink_.results[0].body, "still here");
    EXPECT_EQ(worker_->metric("taskvent_worker_malformed_total"), 4);
}

TEST_F(worker_protocol, reports_done_only_after_the_sink_has_taken_the_result) {
    // An endpoint nobody listens on yet. An ipc path, not a released TCP port: a port can
    // be taken by another test running in parallel before the late sink binds it.
    const auto sink_path = std::filesystem::temp_directory_path() /
                           ("taskvent-worker-test-" + std::to_string(::getpid()) + ".sock");
    const std::unique_ptr<const std::filesystem::path, void (*)(const std::filesystem::path*)>
        remove_at_exit(&sink_path, [](const std::filesystem::path* p) {
            std::error_code ignored;
            std::filesystem::remove(*p, ignored);
        });
    const auto sink_endpoint = "ipc://" + sink_path.string();
    auto cfg = config();
    cfg.sink = sink_endpoint;
    start(cfg, echo());
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "p1")}));
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return contains(ventilator_.reports_from(id).started, 1); }));

    // No sink: the result is held, so neither done nor credit may be reported. Watching for
    // a while is the point here, so this wait is expected to run to its end.
    EXPECT_FALSE(ventilator_.wait_until(
        [&] {
            const auto rep = ventilator_.reports_from(id);
            return !rep.done.empty() || rep.credit > 0;
        },
        300ms));

    fake_sink late(ctx_, sink_endpoint);
    ASSERT_TRUE(late.wait_for_results(1));
    EXPECT_EQ(late.results[0].id, task_id{1});
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return contains(ventilator_.reports_from(id).done, 1); }));
    EXPECT_EQ(ventilator_.reports_from(id).credit, 1u);
}

TEST_F(worker_protocol, grows_its_prefetch_for_short_tasks_up_to_prefetch_max_and_no_further) {
    auto cfg = config();
    cfg.concurrency = 2;
    cfg.prefetch = 2;
    cfg.prefetch_max = 8;
    start(cfg, echo());
    const auto id = register_worker();
    std::vector<proto::task_item> items;
    for (std::uint64_t i = 1; i <= 4; ++i) {
        items.push_back(task(i, "p"));
    }
    ventilator_.send(id, tasks(std::move(items)));

    // Echo takes microseconds (8 queued need no more than 500 us each, even on a loaded
    // machine): the worker asks for up to prefetch_max tasks queued, so the credit
    // returned grows past the 4 slots it started with, to concurrency + prefetch_max in
    // all, and never beyond.
    ASSERT_TRUE(ventilator_.wait_until([&] {
        const auto rep = ventilator_.reports_from(id);
        return rep.done.size() >= 4 && rep.credit >= 10;
    })) << "credit returned: "
        << ventilator_.reports_from(id).credit;
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(ventilator_.reports_from(id).credit, 10u)
        << "4 slots in the hello, 4 freed, 6 more: 10 granted while 0 are held, "
           "capacity 10";
}

TEST_F(worker_protocol, hands_back_tasks_sent_beyond_its_credit) {
    auto cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch = 0;
    auto g = make_gate();
    start(cfg, blocking_echo(g));
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "block"), task(2, "too many")}));

    ASSERT_TRUE(
        ventilator_.wait_until([&] { return !ventilator_.reports_from(id).returned.empty(); }));
    EXPECT_EQ(ids(ventilator_.reports_from(id).returned), (std::vector<std::uint64_t>{2}));
}

TEST_F(worker_protocol, gives_up_running_tasks_at_the_drain_timeout_and_still_says_bye) {
    auto cfg = config();
    cfg.concurrency = 1;
    cfg.drain_timeout = 200ms;
    auto g = make_gate();
    auto& w = start(cfg, blocking_echo(g));
    const auto id = register_worker();
    ventilator_.send(id, tasks({task(1, "block")}));
    ASSERT_TRUE(
        ventilator_.wait_until([&] { return contains(ventilator_.reports_from(id).started, 1); }));

    w.get().request_stop();
    ASSERT_TRUE(ventilator_.wait_for(is<proto::bye>));
    const auto rep = ventilator_.reports_from(id);
    ASSERT_EQ(rep.failed.size(), 1u);
    EXPECT_EQ(
        rep.failed[0],
        (proto::failure{
            task_id{1}, 1, true, "worker stopped: still running after the 200 ms drain timeout"}));
    EXPECT_EQ(rep.credit, 0u);
    EXPECT_EQ(w.wait_exit(), 0);
}
