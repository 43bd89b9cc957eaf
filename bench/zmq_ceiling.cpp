// zmq_ceiling: the raw ZeroMQ ceiling the end-to-end figures are compared with. Moves N
// messages of a given size over PUSH/PULL on loopback, one way, with no bookkeeping,
// and prints messages per second. Same machine, same library, same message size.
#include <zmq.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
    std::size_t count = 2'000'000;
    std::size_t size = 64;
    std::string endpoint = "tcp://127.0.0.1:*";
    CLI::App app{"PUSH/PULL ceiling on loopback"};
    app.add_option("--count", count, "messages to move")->capture_default_str();
    app.add_option("--size", size, "bytes per message")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    zmq::context_t ctx(1);
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::rcvhwm, 100000);
    pull.bind(endpoint);
    const auto bound = pull.get(zmq::sockopt::last_endpoint);

    std::thread sender([&] {
        zmq::socket_t push(ctx, zmq::socket_type::push);
        push.set(zmq::sockopt::sndhwm, 100000);
        push.connect(bound);
        const std::string payload(size, 'x');
        for (std::size_t i = 0; i < count; ++i) {
            (void)push.send(zmq::buffer(payload), zmq::send_flags::none);
        }
    });

    zmq::message_t msg;
    (void)pull.recv(msg);  // the clock starts at the first message, once connected
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 1; i < count; ++i) {
        (void)pull.recv(msg);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sender.join();
    std::printf("{\"messages\":%zu,\"size\":%zu,\"seconds\":%.3f,\"messages_per_s\":%.0f}\n",
                count,
                size,
                secs,
                static_cast<double>(count - 1) / secs);
    return 0;
}
