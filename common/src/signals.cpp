#include "taskvent/signals.hpp"

#include <csignal>

namespace taskvent::signals {
namespace {

volatile std::sig_atomic_t last_signal = 0;

extern "C" void on_signal(int sig) {
    last_signal = sig;
}

}  // namespace

void install() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

int received() noexcept {
    return last_signal;
}

void raise_for_test(int sig) noexcept {
    last_signal = sig;
}

}  // namespace taskvent::signals
