#include "taskvent/task_lines.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace taskvent {
namespace {

nlohmann::json parse_limited(const std::string& line, const std::string& where) {
    const auto limit_depth = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > max_task_line_depth) {
            throw input_error(
                fmt::format("{}: JSON nested deeper than {} levels", where, max_task_line_depth));
        }
        return true;
    };
    try {
        return nlohmann::json::parse(line, limit_depth);
    } catch (const nlohmann::json::exception& e) {
        // parse_error, and also out_of_range for numbers too large for a double.
        throw input_error(
            fmt::format("{}: not JSON ({}); use --lines for plain text payloads", where, e.what()));
    }
}

}  // namespace

std::vector<protocol::submit_item> read_task_lines(std::istream& in,
                                                   const std::string& source,
                                                   bool plain_lines) {
    std::vector<protocol::submit_item> items;
    std::string line;
    std::size_t line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        if (line.find_first_not_of(" \t") == std::string::npos) {
            continue;
        }
        const auto where = fmt::format("{}:{}", source, line_no);
        if (line.size() > protocol::max_payload_bytes) {
            throw input_error(fmt::format("{}: line is {} bytes; a task may carry at most {}",
                                          where,
                                          line.size(),
                                          protocol::max_payload_bytes));
        }
        if (plain_lines) {
            items.push_back({{}, std::move(line)});
            continue;
        }
        const auto j = parse_limited(line, where);
        if (!j.is_object() || !j.contains("payload")) {
            throw input_error(fmt::format(
                "{}: expected an object like {{\"key\": \"k1\", \"payload\": \"...\"}}", where));
        }
        std::string key;
        if (auto k = j.find("key"); k != j.end() && !k->is_null()) {
            if (!k->is_string()) {
                throw input_error(fmt::format("{}: \"key\" must be a string", where));
            }
            key = k->get<std::string>();
        }
        const auto& p = j["payload"];
        items.push_back({std::move(key), p.is_string() ? p.get<std::string>() : p.dump()});
    }
    if (in.bad()) {
        throw input_error(fmt::format("{}: read error after line {}", source, line_no));
    }
    return items;
}

}  // namespace taskvent
