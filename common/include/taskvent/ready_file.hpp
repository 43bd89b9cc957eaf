// The ready file: once a program has bound its sockets it writes their real endpoints
// (ports filled in) as one JSON object, atomically. Tests and scripts bind port "*" and
// read the file back instead of guessing free ports.
#pragma once

#include <map>
#include <string>

namespace taskvent {

/// Writes {"name": "endpoint", ...} to `path` via a temporary file and rename, so a reader
/// never sees half a file. Does nothing when `path` is empty. Throws std::runtime_error.
void write_ready_file(const std::string& path, const std::map<std::string, std::string>& fields);

}  // namespace taskvent
