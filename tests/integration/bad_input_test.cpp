// Hostile input on every bound socket: raw ZeroMQ peers sending garbage, allocation bombs,
// truncated, short, overlong and wrong-version messages, and plain TCP connections sending
// random bytes. The programs must count and drop all of it, keep running, create no task and
// no record from it, and then serve a well-formed run exactly once.
#include <gtest/gtest.h>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <random>
#include <thread>

#include "pipeline.hpp"
#include "process.hpp"
#include "raw_peer.hpp"
#include "taskvent/protocol.hpp"

namespace taskvent::testing {
namespace {

using namespace std::chrono_literals;
namespace proto = taskvent::protocol;

using steady = std::chrono::steady_clock;

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
        [&](const auto& s) { return count_of(s, "malformed") >= expected_malformed; },
        "malformed >= " + std::to_string(expected_malformed),
        30s);
    EXPECT_EQ(count_of(after_garbage, "submitted"), 0u) << after_garbage.dump();
    // The overlong and wrong-version hellos must not have registered an intruder.
    EXPECT_EQ(count_of(after_garbage, "workers_alive"), 2u) << after_garbage.dump();

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
    std::cout << "[ figures  ] ventilator_malformed=" << count_of(status, "malformed")
              << " sent_to_ventilator=" << expected_malformed
              << " sink_malformed=" << count_of(stats, "malformed")
              << " sent_to_sink=" << to_sink.size() << ' ' << r.summary() << '\n';
    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.records, n) << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    EXPECT_EQ(count_of(status, "submitted"), n) << status.dump();
    EXPECT_GE(count_of(status, "malformed"), expected_malformed) << status.dump();
    EXPECT_GE(count_of(stats, "malformed"), to_sink.size()) << stats.dump();
    EXPECT_TRUE(p.ventilator().running()) << p.diagnostics();
}

/// What the lying worker did, for the figures and the checks.
struct liar_tally {
    std::atomic<std::uint64_t> leases{0};        ///< tasks it was sent
    std::atomic<std::uint64_t> invalid_acks{0};  ///< acks no lease of its own can match
    std::atomic<std::uint64_t> foreign_acks{0};  ///< acks for neighbouring ids, others' leases
    std::atomic<std::uint64_t> garbage{0};       ///< malformed messages
};

void send_frames(zmq::socket_t& s, const proto::message& m) {
    const auto f = proto::encode(m);
    (void)s.send(zmq::buffer(f.header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)s.send(zmq::buffer(f.body), zmq::send_flags::dontwait);
}

/// A fake worker: registers with a little credit, takes the tasks it is sent, and lies about
/// every one: acks it twice, acks a later attempt and an id nobody was given, acks the
/// neighbouring ids (leased to real workers), and between messages sends garbage. It never
/// sends a result to the sink and grants no more credit, so its tasks come back only through
/// the confirmation timeout. Bounded: stops at `stop`, after `budget` or 10,000 garbage frames.
void run_liar(zmq::context_t& ctx,
              const std::string& endpoint,
              const std::atomic<bool>& stop,
              std::chrono::milliseconds budget,
              std::uint64_t seed,
              liar_tally& tally) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(endpoint);
    send_frames(s, proto::hello{"liar", 4, 16, 1});
    std::mt19937_64 rng(seed);
    const auto until = steady::now() + budget;
    while (!stop.load() && steady::now() < until) {
        zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(5));
        while (true) {
            std::vector<zmq::message_t> parts;
            if (!zmq::recv_multipart(s, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
                break;
            }
            if (parts.size() != 2) {
                continue;
            }
            const auto decoded =
                proto::decode(parts[0].to_string_view(), parts[1].to_string_view());
            if (!decoded) {
                continue;
            }
            const auto& in = decoded.value();
            if (std::holds_alternative<proto::heartbeat>(in)) {
                send_frames(s, proto::heartbeat{});
                continue;
            }
            const auto* batch = std::get_if<proto::tasks>(&in);
            if (batch == nullptr) {
                continue;
            }
            for (const auto& t : batch->items) {
                ++tally.leases;
                const proto::lease_ref mine{t.id, t.attempt};
                proto::report r;
                r.started = {mine};
                r.done = {mine};
                send_frames(s, r);  // a lie: no result went to the sink
                proto::report lies;
                // Doubled, an attempt still to come, and ids nobody was given.
                lies.done.push_back(mine);
                lies.done.push_back(proto::lease_ref{t.id, t.attempt + 1});
                lies.done.push_back(proto::lease_ref{task_id{t.id.value | 0xFFFFFFull}, 1});
                lies.failed.push_back(
                    proto::failure{task_id{t.id.value | 0xFFFFFEull}, 1, false, "lie"});
                lies.returned.push_back(proto::lease_ref{task_id{t.id.value | 0xFFFFFDull}, 1});
                tally.invalid_acks += 5;
                for (std::uint64_t k = 1; k <= 4; ++k) {
                    lies.done.push_back(proto::lease_ref{task_id{t.id.value + k}, 1});
                }
                tally.foreign_acks += 4;
                send_frames(s, lies);
            }
        }
        if (tally.garbage.load() < 10000) {
            const raw_message junk = {raw_header(proto::version, 3), random_bytes(rng(), 24)};
            (void)s.send(zmq::buffer(junk[0]),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
            (void)s.send(zmq::buffer(junk[1]), zmq::send_flags::dontwait);
            ++tally.garbage;
        }
    }
}

TEST(bad_input, hostile_peers_during_a_run_change_nothing) {
    temp_dir dir;
    constexpr std::size_t n = 20000;
    // 2 ms tasks on 3 workers x 4 slots: a few seconds of run for the hostile peers to act in.
    const auto tasks = write_workload(dir / "tasks.jsonl", n, [](std::size_t) { return "2"; });
    pipeline_options opts;
    opts.workers = 3;
    opts.expect = n;
    opts.heartbeat_interval_ms = 200;
    // The liar's tasks come back after this.
    opts.confirm_timeout_ms = 2000;
    opts.worker.handler = "sleep";
    opts.worker.concurrency = 4;
    pipeline p(dir.path(), opts);
    const auto seed = std::random_device{}();
    std::cout << "[ seed     ] " << seed << '\n';

    // Connections that never speak, to every bound port, held for the whole run.
    std::vector<std::unique_ptr<silent_tcp_connection>> silent;
    for (const auto& endpoint :
         {p.workers_endpoint(), p.control_endpoint(), p.results_endpoint()}) {
        for (int i = 0; i < 4; ++i) {
            silent.push_back(std::make_unique<silent_tcp_connection>(loopback_port(endpoint)));
            ASSERT_TRUE(silent.back()->connected()) << endpoint;
        }
    }

    zmq::context_t ctx(1);
    std::atomic<bool> stop{false};
    liar_tally tally;
    std::thread liar([&] { run_liar(ctx, p.workers_endpoint(), stop, 120s, seed, tally); });
    struct joiner {
        std::atomic<bool>& stop;
        std::thread& t;
        ~joiner() {
            stop = true;
            t.join();
        }
    } join_liar{stop, liar};
    p.wait_for_status([](const auto& s) { return count_of(s, "workers_alive") >= 4; },
                      "the liar registered",
                      30s);

    const auto sub = p.submit(tasks.path);
    ASSERT_TRUE(sub.status.success()) << sub.out << sub.err << p.diagnostics();
    const auto sink_end = p.wait_for_sink_exit(120s);
    ASSERT_TRUE(sink_end.success()) << sink_end.describe() << '\n' << p.diagnostics();
    stop = true;

    const auto status = p.status();
    const auto stats = p.sink_stats();
    const auto r = check_results(tasks, p.output_path());
    std::size_t still_open = 0;
    for (const auto& c : silent) {
        still_open += c->still_open() ? 1 : 0;
    }
    std::cout << "[ figures  ] tasks=" << n << " silent_connections=" << silent.size()
              << " still_open=" << still_open << " liar_leases=" << tally.leases.load()
              << " invalid_acks=" << tally.invalid_acks
              << " foreign_acks=" << tally.foreign_acks.load() << " garbage=" << tally.garbage
              << " stale_acks=" << count_of(status, "stale_acks")
              << " malformed=" << count_of(status, "malformed")
              << " confirm_timeouts=" << count_of(status, "confirm_timeouts")
              << " duplicates_dropped=" << count_of(stats, "duplicates") << ' ' << r.summary()
              << '\n';

    EXPECT_TRUE(r.exactly_once()) << r.summary();
    EXPECT_EQ(r.ok, n) << r.summary();
    EXPECT_GT(tally.leases.load(), 0u) << "the liar was never sent a task";
    EXPECT_GT(tally.garbage.load(), 0u);
    // Every ack that matches no lease of the liar's own is counted and ignored.
    EXPECT_GE(count_of(status, "stale_acks"), tally.invalid_acks.load()) << status.dump();
    EXPECT_GE(count_of(status, "malformed"), 1u) << status.dump();
    // Only the tasks the liar sat on wait out the confirmation timeout; no result the sink
    // has was dropped because of a lie.
    EXPECT_LE(count_of(status, "confirm_timeouts"), tally.leases.load()) << status.dump();
    EXPECT_TRUE(p.ventilator().running()) << p.diagnostics();
    EXPECT_EQ(p.live_workers().size(), 3u) << p.diagnostics();
}

}  // namespace
}  // namespace taskvent::testing
