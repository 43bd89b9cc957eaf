// The project's error codes: what a peer, a file or the disk can get wrong. Returned as
// std::error_code values and handled where they are understood; never thrown from a loop.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace taskvent {

enum class errc {
    short_message = 1,   ///< fewer frames than the protocol needs
    too_many_frames,     ///< more frames than the protocol allows
    bad_header,          ///< header frame of the wrong size or magic
    wrong_version,       ///< peer speaks another protocol version
    unknown_type,        ///< header names no message type we know
    malformed_body,      ///< msgpack body does not parse or has the wrong shape
    limit_exceeded,      ///< body asks for more elements, bytes or depth than allowed
    unexpected_message,  ///< a well-formed message this socket does not take
};

const std::error_category& taskvent_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), taskvent_category()};
}

/// A value or the error that prevented it. Small on purpose: just enough for decoders.
template <typename T>
class result {
  public:
    result(T value) : v_(std::move(value)) {}   // NOLINT(google-explicit-constructor)
    result(std::error_code ec) : v_(ec) {}      // NOLINT(google-explicit-constructor)
    result(errc e) : v_(make_error_code(e)) {}  // NOLINT(google-explicit-constructor)

    bool has_value() const noexcept { return std::holds_alternative<T>(v_); }
    explicit operator bool() const noexcept { return has_value(); }
    T& value() & { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    const T& value() const& { return std::get<T>(v_); }
    std::error_code error() const { return has_value() ? std::error_code{} : std::get<1>(v_); }

  private:
    std::variant<T, std::error_code> v_;
};

}  // namespace taskvent

template <>
struct std::is_error_code_enum<taskvent::errc> : std::true_type {};
