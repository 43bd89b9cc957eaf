// server: results pushed in come back as confirms once durable, duplicates are confirmed
// again, dead records from the ventilator are recorded, bad input is counted and dropped.
// A fake ventilator (a ROUTER on loopback) plays the control side.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include "taskvent/temp_dir.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "taskvent/sink/result_log.hpp"
#include "taskvent/sink/server.hpp"
#include "taskvent/transport.hpp"

namespace {

using namespace std::chrono_literals;
using taskvent::task_id;
using taskvent::protocol::outcome;
using taskvent::protocol::result_item;
namespace protocol = taskvent::protocol;
namespace transport = taskvent::transport;

constexpr auto deadline = 10s;

class temp_dir {
  public:
    temp_dir() { path_ = taskvent::make_temp_dir("taskvent-sink"); }
    ~temp_dir() { std::filesystem::remove_all(path_); }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

  private:
    std::filesystem::path path_;
};

result_item item(std::uint64_t id, outcome status = outcome::ok) {
    result_item r;
    r.id = task_id{id};
    r.attempt = 1;
    r.status = status;
    r.key = "k" + std::to_string(id);
    r.body = status == outcome::ok ? "out" : "reason";
    r.submitted_ns = taskvent::wall_clock_ns();
    r.worker = status == outcome::dead ? "ventilator" : "w1";
    return r;
}

protocol::results batch(std::initializer_list<std::uint64_t> ids) {
    protocol::results r;
    for (auto id : ids) {
        r.items.push_back(item(id));
    }
    return r;
}

std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

/// The ventilator's control ROUTER, reduced to what the sink talks to: it learns the
/// sink's routing id from sink_hello and counts how often each id was confirmed.
class fake_ventilator {
  public:
    explicit fake_ventilator(zmq::context_t& ctx)
        : router_(transport::make_socket(ctx, zmq::socket_type::router, {})) {
        router_.bind("tcp://127.0.0.1:*");
        endpoint_ = transport::last_endpoint(router_);
    }

    const std::string& endpoint() const { return endpoint_; }
    int confirms_of(std::uint64_t id) const {
        const auto it = confirms_.find(id);
        return it == confirms_.end() ? 0 : it->second;
    }
    bool knows_sink() const { return !sink_id_.empty(); }

    /// Receives until `done` holds or the deadline passes.
    bool wait_until(const std::function<bool()>& done) {
        const auto until = std::chrono::steady_clock::now() + deadline;
        while (!done()) {
            if (std::chrono::steady_clock::now() > until) {
                return false;
            }
            zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
            zmq::poll(items, 1, 50ms);
            while (auto in = transport::receive(router_, true)) {
                take(*in);
            }
        }
        return true;
    }

    void send_to_sink(const protocol::message& msg) {
        ASSERT_EQ(transport::send(router_, msg, sink_id_), transport::send_status::sent);
    }

  private:
    void take(const transport::incoming& in) {
        ASSERT_TRUE(in.msg) << in.msg.error().message();
        if (std::holds_alternative<protocol::sink_hello>(in.msg.value())) {
            sink_id_ = in.routing_id;
        } else if (auto* c = std::get_if<protocol::confirm>(&in.msg.value())) {
            for (auto id : c->ids) {
                ++confirms_[id.value];
            }
        }
    }

    zmq::socket_t router_;
    std::string endpoint_;
    std::string sink_id_;
    std::map<std::uint64_t, int> confirms_;
};

class sink_server : public ::testing::Test {
  protected:
    taskvent::sink::server_config config() {
        taskvent::sink::server_config cfg;
        cfg.results_bind = "tcp://127.0.0.1:*";
        cfg.control = ventilator_.endpoint();
        cfg.output = dir_.file("results.jsonl");
        cfg.stats_file = dir_.file("stats.json");
        cfg.ready_file = dir_.file("ready.json");
        cfg.poll_timeout = 20ms;
        return cfg;
    }

    /// Runs a server on its own thread and connects a PUSH to it, as a worker would.
    taskvent::sink::server& start(const taskvent::sink::server_config& cfg) {
        server_ = std::make_unique<taskvent::sink::server>(cfg);
        running_ = std::async(std::launch::async, [s = server_.get()] { return s->run(); });
        push_.connect(server_->results_endpoint());
        EXPECT_TRUE(ventilator_.wait_until([&] { return ventilator_.knows_sink(); }));
        return *server_;
    }

    /// Stops the server whatever a failed assertion left running: its thread uses it.
    void TearDown() override {
        if (running_.valid()) {
            server_->stop();
            (void)wait_for_exit();
        }
    }

    int stop_and_wait() {
        server_->stop();
        return wait_for_exit();
    }

    int wait_for_exit() {
        if (running_.wait_for(deadline) != std::future_status::ready) {
            ADD_FAILURE() << "server did not exit";
            std::abort();  // the server thread still runs; nothing safe is left to do
        }
        return running_.get();
    }

    void push(const protocol::message& msg) {
        ASSERT_EQ(transport::send(push_, msg), transport::send_status::sent);
    }

    temp_dir dir_;
    zmq::context_t ctx_{1};
    fake_ventilator ventilator_{ctx_};
    zmq::socket_t push_ = transport::make_socket(ctx_, zmq::socket_type::push, {});
    std::unique_ptr<taskvent::sink::server> server_;
    std::future<int> running_;
};

TEST_F(sink_server, confirms_new_results_and_confirms_duplicates_again) {
    auto& srv = start(config());

    push(batch({1, 2}));
    ASSERT_TRUE(ventilator_.wait_until(
        [&] { return ventilator_.confirms_of(1) == 1 && ventilator_.confirms_of(2) == 1; }));
    push(batch({2, 3}));
    ASSERT_TRUE(ventilator_.wait_until(
        [&] { return ventilator_.confirms_of(2) == 2 && ventilator_.confirms_of(3) == 1; }));

    EXPECT_EQ(stop_and_wait(), 0);
    EXPECT_EQ(srv.stats().recorded, 3u);
    EXPECT_EQ(srv.stats().duplicates, 1u);
    EXPECT_EQ(read_lines(config().output).size(), 3u);
    EXPECT_NE(srv.metrics().render().find("taskvent_sink_duplicates_total 1"), std::string::npos);
}

TEST_F(sink_server, records_dead_records_sent_by_the_ventilator) {
    start(config());

    protocol::results dead;
    dead.items.push_back(item(7, outcome::dead));
    ventilator_.send_to_sink(dead);
    ASSERT_TRUE(ventilator_.wait_until([&] { return ventilator_.confirms_of(7) == 1; }));

    EXPECT_EQ(stop_and_wait(), 0);
    const auto lines = read_lines(config().output);
    ASSERT_EQ(lines.size(), 1u);
    const auto record = nlohmann::json::parse(lines[0]);
    EXPECT_EQ(record["status"], "dead");
    EXPECT_EQ(record["error"], "reason");
    EXPECT_EQ(record["worker"], "ventilator");
}

TEST_F(sink_server, counts_malformed_and_unexpected_messages_and_keeps_serving) {
    auto& srv = start(config());

    ASSERT_TRUE(push_.send(zmq::str_buffer("garbage"), zmq::send_flags::none));
    push(protocol::heartbeat{});  // well-formed, but not something a PULL takes
    push(batch({4}));
    ASSERT_TRUE(ventilator_.wait_until([&] { return ventilator_.confirms_of(4) == 1; }));

    EXPECT_EQ(stop_and_wait(), 0);
    EXPECT_EQ(srv.stats().malformed, 2u);
    EXPECT_EQ(srv.stats().recorded, 1u);
    EXPECT_NE(srv.metrics().render().find("taskvent_sink_malformed_total 2"), std::string::npos);
}

TEST_F(sink_server, exits_once_the_expected_tasks_are_recorded_counting_recovered_ones) {
    auto cfg = config();
    cfg.expect = 3;
    {
        taskvent::sink::result_log earlier(cfg.output);
        const std::vector<result_item> recovered{item(1)};
        ASSERT_FALSE(earlier.append(recovered).error);
    }
    auto& srv = start(cfg);

    push(batch({1, 2}));
    ASSERT_TRUE(ventilator_.wait_until([&] { return ventilator_.confirms_of(2) == 1; }));
    push(batch({3}));

    EXPECT_EQ(wait_for_exit(), 0);
    EXPECT_TRUE(ventilator_.wait_until([&] { return ventilator_.confirms_of(3) == 1; }));
    const auto stats = nlohmann::json::parse(std::ifstream(cfg.stats_file));
    EXPECT_EQ(stats,
              nlohmann::json({{"recorded", 3},
                              {"duplicates", 1},
                              {"ok", 3},
                              {"failed", 0},
                              {"dead", 0},
                              {"malformed", 0}}));
    const auto ready = nlohmann::json::parse(std::ifstream(cfg.ready_file));
    EXPECT_EQ(ready["results"], srv.results_endpoint());
}

}  // namespace
