// One assert for broken invariants: logs where and why, then aborts. Never used for
// anything a peer or the disk can get wrong; those are values handled where understood.
#pragma once

#include <source_location>
#include <string_view>

namespace taskvent::detail {
[[noreturn]] void check_failed(std::string_view expr,
                               std::string_view context,
                               std::source_location where);
}  // namespace taskvent::detail

#define TASKVENT_CHECK(expr, context)                                                          \
    do {                                                                                       \
        if (!(expr)) [[unlikely]] {                                                            \
            ::taskvent::detail::check_failed(#expr, context, std::source_location::current()); \
        }                                                                                      \
    } while (false)
