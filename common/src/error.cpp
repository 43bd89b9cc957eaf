#include "taskvent/error.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "taskvent/check.hpp"

namespace taskvent {
namespace {

class category final : public std::error_category {
  public:
    const char* name() const noexcept override { return "taskvent"; }

    std::string message(int code) const override {
        switch (static_cast<errc>(code)) {
            case errc::short_message:
                return "message has too few frames";
            case errc::too_many_frames:
                return "message has too many frames";
            case errc::bad_header:
                return "header frame is not a taskvent header";
            case errc::wrong_version:
                return "peer speaks another protocol version";
            case errc::unknown_type:
                return "unknown message type";
            case errc::malformed_body:
                return "message body is not valid msgpack of the expected shape";
            case errc::limit_exceeded:
                return "message body exceeds the decoder's limits";
            case errc::unexpected_message:
                return "message type not accepted on this socket";
        }
        return "unknown taskvent error";
    }
};

}  // namespace

const std::error_category& taskvent_category() noexcept {
    static const category instance;
    return instance;
}

namespace detail {

void check_failed(std::string_view expr, std::string_view context, std::source_location where) {
    spdlog::critical("invariant broken: {} ({}) at {}:{} in {}",
                     expr,
                     context,
                     where.file_name(),
                     where.line(),
                     where.function_name());
    spdlog::shutdown();
    std::abort();
}

}  // namespace detail
}  // namespace taskvent
