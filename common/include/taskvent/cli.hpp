// Flag helpers shared by the programs: every option is a flag and a TASKVENT_ environment
// variable; log options look the same everywhere.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "taskvent/log.hpp"

namespace taskvent::cli {

/// "heartbeat-interval-ms" -> "TASKVENT_HEARTBEAT_INTERVAL_MS".
std::string env_name(const std::string& flag);

/// Adds --flag with its TASKVENT_ environment variable and returns the option.
template <typename T>
CLI::Option* add(CLI::App& app, const std::string& flag, T& value, const std::string& help) {
    return app.add_option("--" + flag, value, help)->envname(env_name(flag))->capture_default_str();
}

/// --log-level and --log-format (text|json).
void add_log_options(CLI::App& app, log::options& opts);

}  // namespace taskvent::cli
