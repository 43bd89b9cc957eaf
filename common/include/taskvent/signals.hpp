// Signal handling shared by the programs: SIGTERM and SIGINT set a flag that the event
// loop polls; nothing else happens inside the handler.
#pragma once

#include <atomic>

namespace taskvent::signals {

/// Installs handlers for SIGTERM and SIGINT and ignores SIGPIPE. Call once from main.
void install();

/// The last termination signal received (SIGTERM or SIGINT), or 0 when none yet.
int received() noexcept;

/// For tests: pretend a signal arrived.
void raise_for_test(int sig) noexcept;

}  // namespace taskvent::signals
