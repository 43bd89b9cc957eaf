// Hostile input on every bound socket: raw ZeroMQ peers sending garbage, allocation bombs,
// truncated, short, overlong and wrong-version messages, and plain TCP connections sending
// random bytes. The programs must count and drop all of it, keep running, create no task and
// no record from it, and then serve a well-formed run exactly once.
#include <gtest/gtest.h>

#include <zmq.hpp>

#include <chrono>
#include <iostream>
#include <random>

#include "pipeline.hpp"
#include "process.hpp"
#include "raw_peer.hpp"
#include "taskvent/protocol.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
namespace proto = taskvent::protocol;

std::uint64_t count(const nlohmann::json& j, const char* key) {
    return j.value(key, std::uint64_t{0});
}

/// Every malformed shape, built around one well-formed message `valid` of the type the
/// socket takes, so that the only thing wrong with each is the thing under test.
std::vector<raw_message> hostile_messages(const proto::message& valid, std::uint64_t seed) {
    const auto f = proto::encode(valid);
    const auto type = static_cast<std::uint8_t>(proto::type_of(valid));
    const auto header = raw_header(proto::version, type);
    std::vector<raw_message> m;
    // Raw garbage: one frame, then two frames where header and body are expected.
    m.push_back({random_bytes(seed, 64)});
    m.push_back({random_bytes(seed + 1, 4), random_bytes(seed + 2, 300)});
    // Length bombs: a valid header, then a body whose first element claims 4 G entries/bytes.
    m.push_back({header, std::string("\xdd\xff\xff\xff\xff", 5)});  // array32
    m.push_back({header, std::string("\xdf\xff\xff\xff\xff", 5)});  // map32
    m.push_back({header, std::string("\xdb\xff\xff\xff\xff", 5)});  // str32
    m.push_back({header, std::string("\xc6\xff\xff\xff\xff", 5)});  // bin32
    // Deep nesting bomb: thousands of one-element arrays inside each other.
    m.push_back({header, std::string(5000, '\x91')});
    // Truncated: the right header, half of a real body.
    m.push_back({header, f.body.substr(0, f.body.size() / 2)});
    // A single frame: the header alone.
    m.push_back({header});
    // Too many frames: a real message with two more frames after it.
    m.push_back({f.header, f.body, "extra", random_bytes(seed + 3, 16)});
    // Wrong protocol version, otherwise perfect.
    m.push_back({raw_header(proto::version + 1, type), f.body});
    // Headers that are not ours: too short, wrong magic, unknown type; and empty frames.
    m.push_back({std::string("TV"), f.body});
    m.push_back({std::string{'X', 'Y', static_cast<char>(proto::version), static_cast<char>(type)},
                 f.body});
    m.push_back({raw_header(proto::version, 200), f.body});
    m.push_back({std::string(), std::string()});
    return m;
}

/// A ZMTP 3.0 greeting (NULL mechanism), then a command frame claiming 2^64-1 bytes.
std::string zmtp_greeting_then_bomb() {
    std::string g(64, '\0');
    g[0] = '\xff';
    g[9] = '\x7f';
    g[10] = 3;  // major version
    g.replace(12, 4, "NULL");
    g += std::string("\x06\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    return g;
}

TEST(bad_input, hostile_frames_are_counted_and_dropped_and_serving_goes_on) {
    temp_dir dir;
    constexpr std::size_t n = 2000;
    pipeline_options opts;
    opts.workers = 2;
    opts.expect = n;
    pipeline p(dir.path(), opts);
    const auto seed = std::random_device{}();
    std::cout << "[ seed     ] " << seed << '\n';

    // A result for a task nobody submitted: if any of its broken forms were taken, the
    // output would hold a record with this key and the check below would call it unexpected.
    proto::result_item intruder;
    intruder.id = task_id{424242};
    intruder.attempt = 1;
    intruder.key = "intruder";
    intruder.body = "should never be recorded";
    intruder.worker = "intruder";

    const auto to_workers = hostile_messages(proto::hello{"intruder", 4, 36, 1}, seed);
    const auto to_control =
        hostile_messages(proto::submit{1, 0, {{"intruder", "should never be queued"}}}, seed + 100);
    const auto to_sink = hostile_messages(proto::results{{intruder}}, seed + 200);
    {
        zmq::context_t ctx(1);
        send_raw_messages(ctx, zmq::socket_type::dealer, p.workers_endpoint(), to_workers);
        send_raw_messages(ctx, zmq::socket_type::dealer, p.control_endpoint(), to_control);
        send_raw_messages(ctx, zmq::socket_type::push, p.results_endpoint(), to_sink);
        // Closing the context waits (up to the linger) until everything queued has left.
    }

    // The ventilator counts every message it dropped; wait until all have been seen.
    const auto expected_malformed = to_workers.size() + to_control.size();
    const auto after_garbage = p.wait_for_status(
        [&](const auto& s) { return count(s, "malformed") >= expected_malformed; },
        "malformed >= " + std::to_string(expected_malformed),
        30s);
    EXPECT_EQ(count(after_garbage, "submitted"), 0u) << after_garbage.dump();
    // The overlong and wrong-version hellos must not have registered an intruder.
    EXPECT_EQ(count(after_garbage, "workers_alive"), 2u) << after_garbage.dump();

    // Plain TCP: random bytes, and a valid greeting followed by an absurd frame length.
    // libzmq takes a first byte other than 0xff for a ZMTP 1.0 peer, so random bytes can turn
    // into messages too: they add to the malformed counters, hence >= below, never ==.
    std::mt19937_64 rng(seed);
    for (const auto& endpoint :
         {p.workers_endpoint(), p.control_endpoint(), p.results_endpoint()}) {
        const auto port = loopback_port(endpoint);
        EXPECT_TRUE(send_tcp_bytes(port, random_bytes(rng(), 4096))) << endpoint;
        EXPECT_TRUE(send_tcp_bytes(port, zmtp_greeting_then_bomb())) << endpoint;
        EXPECT_TRUE(send_tcp_bytes(port, std::string())) << endpoint;
    }

    ASSERT_TRUE(p.ventilator().running()) << p.diagnostics();
    ASSERT_TRUE(p.sink().running()) << p.diagnostics();
    ASSERT_EQ(p.live_workers().size(), 2u) << p.diagnostics();

    // And then a well-formed run, exactly once.
    const auto tasks = write_workload(dir / "tasks.jsonl", n);
    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();
    const auto sink_end = p.wait_for_sink_exit(60s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();

    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path());
    std::cout << "[ figures  ] ventilator_malformed=" << count(status, "malformed")
              << " sent_to_ventilator=" << expected_malformed
              << " sink_malformed=" << count(stats, "malformed")
              << " sent_to_sink=" << to_sink.size() << ' ' << r.summary() << '\n';
    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.records, n) << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    EXPECT_EQ(count(status, "submitted"), n) << status.dump();
    EXPECT_GE(count(status, "malformed"), expected_malformed) << status.dump();
    EXPECT_GE(count(stats, "malformed"), to_sink.size()) << stats.dump();
    EXPECT_TRUE(p.ventilator().running()) << p.diagnostics();
}

}  // namespace
}  // namespace taskvent::testing
