// echo, sleep and sha256, and the choice of a built-in handler by name. exec lives in
// exec_handler.cpp.
#include "taskvent/worker/builtin_handlers.hpp"

#include <openssl/evp.h>

#include <array>
#include <charconv>
#include <memory>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

namespace taskvent::worker {
namespace {

std::string_view trim(std::string_view s) {
    constexpr std::string_view space = " \t\r\n";
    const auto first = s.find_first_not_of(space);
    if (first == std::string_view::npos) {
        return {};
    }
    return s.substr(first, s.find_last_not_of(space) - first + 1);
}

/// The payload as milliseconds when it is a plain non-negative integer.
std::optional<std::chrono::milliseconds> parse_ms(std::string_view payload) {
    const auto text = trim(payload);
    std::uint32_t ms = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, ms);
    if (text.empty() || ec != std::errc{} || ptr != end) {
        return std::nullopt;
    }
    return std::chrono::milliseconds(ms);
}

std::string to_hex(const unsigned char* data, std::size_t size) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(size * 2, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0x0F];
    }
    return out;
}

struct md_ctx_deleter {
    void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};

}  // namespace

handler make_echo_handler() {
    return [](const task_context& ctx) { return handler_result::ok(std::string(ctx.payload)); };
}

handler make_sleep_handler(std::chrono::milliseconds fallback) {
    return [fallback](const task_context& ctx) {
        const auto duration = parse_ms(ctx.payload).value_or(fallback);
        if (ctx.wait_cancelled(duration)) {
            return handler_result::retry("cancelled");
        }
        return handler_result::ok(std::string(ctx.payload));
    };
}

handler make_sha256_handler(std::uint32_t rounds) {
    if (rounds == 0) {
        throw std::invalid_argument("--sha256-rounds must be at least 1");
    }
    return [rounds](const task_context& ctx) {
        // Checking for cancellation every few thousand rounds costs nothing measurable and
        // keeps a cancelled task from burning a core for the rest of its rounds.
        constexpr std::uint32_t cancel_check_every = 4096;

        std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> md(EVP_MD_CTX_new());
        std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
        unsigned int size = 0;
        const auto hash = [&](const void* data, std::size_t len) {
            if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1 ||
                EVP_DigestUpdate(md.get(), data, len) != 1 ||
                EVP_DigestFinal_ex(md.get(), digest.data(), &size) != 1) {
                throw std::runtime_error("sha256: OpenSSL digest failed");
            }
        };

        hash(ctx.payload.data(), ctx.payload.size());
        for (std::uint32_t round = 1; round < rounds; ++round) {
            if (round % cancel_check_every == 0 && ctx.cancelled()) {
                return handler_result::retry("cancelled");
            }
            hash(digest.data(), size);
        }
        return handler_result::ok(to_hex(digest.data(), size));
    };
}

const std::vector<std::string_view>& builtin_handler_names() {
    static const std::vector<std::string_view> names{"echo", "sleep", "sha256", "exec"};
    return names;
}

handler make_builtin_handler(const worker_config& cfg) {
    if (cfg.handler == "echo") {
        return make_echo_handler();
    }
    if (cfg.handler == "sleep") {
        return make_sleep_handler(cfg.sleep);
    }
    if (cfg.handler == "sha256") {
        return make_sha256_handler(cfg.sha256_rounds);
    }
    if (cfg.handler == "exec") {
        if (cfg.exec_command.empty()) {
            throw std::invalid_argument("--handler exec needs --exec-command");
        }
        exec_options opts;
        opts.command = cfg.exec_command;
        opts.timeout = cfg.exec_timeout;
        return make_exec_handler(std::move(opts));
    }
    throw std::invalid_argument(fmt::format(
        "unknown handler '{}' (valid: {})", cfg.handler, fmt::join(builtin_handler_names(), ", ")));
}

}  // namespace taskvent::worker
