// Task lines, as users write them: one JSON object per line, {"key": "k1", "payload": ...},
// or (plain mode) one payload per line. Shared by `taskvent submit` and the ventilator's
// --tasks file so that both accept and refuse exactly the same input.
#pragma once

#include <istream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "taskvent/protocol.hpp"

namespace taskvent {

/// A task line that cannot be read; what() names the source and line number.
class input_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// Deepest JSON nesting a task line may have: deeper input is refused rather than
/// recursed into (a payload of 70,000 '[' would otherwise exhaust the stack).
inline constexpr int max_task_line_depth = 64;

/// Reads every task line. The key is optional; a payload that is not a string is kept as
/// its JSON text. Blank lines are skipped. Throws input_error naming the first bad line.
std::vector<protocol::submit_item> read_task_lines(std::istream& in,
                                                   const std::string& source,
                                                   bool plain_lines);

namespace detail {

/// The fast path of read_task_lines: reads `line` into `out` when it is an object of a
/// string "payload" and an optional string "key" in printable ASCII without escapes, and
/// returns false, leaving the line to the full JSON parser, otherwise. Whatever it
/// accepts, the full parser reads to the same task.
bool read_simple_task_line(std::string_view line, protocol::submit_item& out);

}  // namespace detail

}  // namespace taskvent
