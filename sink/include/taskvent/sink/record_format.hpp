// The sink's output line, one JSON object per final result. Written by hand because every
// result passes through here on the hot path; read back (its leading fields only) when a
// restarted sink rebuilds the set of task ids it has already recorded.
//
//   {"id":7,"key":"k1","status":"ok","attempts":1,"result":"out","latency_ms":0.512,"worker":"w1"}
//   {"id":8,"key":"","status":"dead","attempts":5,"error":"worker died","latency_ms":9.1,...}
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "taskvent/ids.hpp"
#include "taskvent/protocol.hpp"

namespace taskvent::sink {

/// Appends `s` to `out` as the inside of a JSON string. Valid UTF-8 is copied as is; each
/// byte that is not part of a valid UTF-8 sequence becomes \u00XX (so "\xff" -> "\u00ff").
void append_json_escaped(std::string& out, std::string_view s);

/// Appends one output line for `item`, '\n' included. Field order is fixed (id, key,
/// status first) so that parse_record_head can read a line back without a JSON parser.
/// latency_ms = (now_ns - submitted_ns) / 1e6 with microsecond precision; null when the
/// submission time is unknown (0).
void append_record(std::string& out, const protocol::result_item& item, std::int64_t now_ns);

/// The leading fields of an output line: what a restarted sink needs to know.
struct record_head {
    task_id id;
    std::optional<protocol::outcome> status;  ///< empty when the status does not parse
};

/// Reads the head of one line (without its '\n'). Empty when not even the id parses.
std::optional<record_head> parse_record_head(std::string_view line);

}  // namespace taskvent::sink
