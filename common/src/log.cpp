#include "taskvent/log.hpp"

#include <spdlog/details/fmt_helper.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>
#include <stdexcept>

namespace taskvent::log {
namespace {

std::mutex setup_mutex;
spdlog::sink_ptr shared_sink;
spdlog::level::level_enum shared_level = spdlog::level::info;

/// Writes the message text escaped for a JSON string, for the json log format.
class json_message_flag final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg,
                const std::tm&,
                spdlog::memory_buf_t& dest) override {
        for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
            switch (c) {
                case '"':
                    dest.append(std::string_view("\\\""));
                    break;
                case '\\':
                    dest.append(std::string_view("\\\\"));
                    break;
                case '\n':
                    dest.append(std::string_view("\\n"));
                    break;
                case '\t':
                    dest.append(std::string_view("\\t"));
                    break;
                default:
                    if (static_cast<unsigned char>(c) < 0x20) {
                        static constexpr char hex[] = "0123456789abcdef";
                        const char esc[] = {'\\', 'u', '0', '0', hex[(c >> 4) & 0xF], hex[c & 0xF]};
                        dest.append(std::string_view(esc, sizeof esc));
                    } else {
                        dest.push_back(c);
                    }
            }
        }
    }

    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<json_message_flag>();
    }
};

}  // namespace

void setup(const options& opts) {
    const auto level = spdlog::level::from_str(opts.level);
    if (level == spdlog::level::off && opts.level != "off") {
        throw std::invalid_argument("unknown log level '" + opts.level +
                                    "' (use trace, debug, info, warn, error, critical or off)");
    }

    std::lock_guard lock(setup_mutex);
    shared_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    if (opts.fmt == format::json) {
        auto formatter =
            std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
        formatter->add_flag<json_message_flag>('*').set_pattern(
            R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":"%*"})");
        shared_sink->set_formatter(std::move(formatter));
    } else {
        shared_sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %n: %v");
    }
    shared_level = level;

    auto root = std::make_shared<spdlog::logger>("taskvent", shared_sink);
    root->set_level(level);
    spdlog::set_default_logger(root);
    spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) {
        l->sinks() = {shared_sink};
        l->set_level(level);
    });
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
    std::lock_guard lock(setup_mutex);
    if (auto existing = spdlog::get(component)) {
        return existing;
    }
    if (!shared_sink) {
        shared_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        shared_sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %n: %v");
    }
    auto logger = std::make_shared<spdlog::logger>(component, shared_sink);
    logger->set_level(shared_level);
    logger->flush_on(spdlog::level::warn);
    spdlog::register_logger(logger);
    return logger;
}

bool rate_limiter::allow(std::uint64_t& suppressed) {
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= window_) {
        window_start_ = now;
        in_window_ = 0;
    }
    if (in_window_ < burst_) {
        ++in_window_;
        suppressed = suppressed_;
        suppressed_ = 0;
        return true;
    }
    ++suppressed_;
    return false;
}

}  // namespace taskvent::log
