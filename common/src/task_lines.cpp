#include "taskvent/task_lines.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace taskvent {
namespace {

bool is_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/// Reads the common shape of a task line: an object of a string "payload" and optionally
/// a string "key", whose strings hold only printable ASCII without escapes. Such strings
/// mean the same decoded as written, so the text between the quotes is the value.
class simple_line_reader {
  public:
    explicit simple_line_reader(std::string_view line) : s_(line) {}

    bool read(protocol::submit_item& out) {
        bool have_key = false;
        bool have_payload = false;
        std::string_view key, payload;
        skip_space();
        if (!eat('{')) {
            return false;
        }
        for (int member = 0;; ++member) {
            if (member == 2) {
                return false;  // a third member, or a trailing comma
            }
            skip_space();
            std::string_view name, value;
            if (!string(name)) {
                return false;
            }
            skip_space();
            if (!eat(':')) {
                return false;
            }
            skip_space();
            if (!string(value)) {
                return false;
            }
            if (name == "key" && !have_key) {
                have_key = true;
                key = value;
            } else if (name == "payload" && !have_payload) {
                have_payload = true;
                payload = value;
            } else {
                return false;
            }
            skip_space();
            if (!eat(',')) {
                break;
            }
        }
        if (!eat('}')) {
            return false;
        }
        skip_space();
        if (pos_ != s_.size() || !have_payload) {
            return false;
        }
        out.key.assign(key);
        out.payload.assign(payload);
        return true;
    }

  private:
    void skip_space() {
        while (pos_ < s_.size() && is_json_space(s_[pos_])) {
            ++pos_;
        }
    }
    bool eat(char c) {
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    /// A string of bytes 0x20..0x7e other than '"' and '\\'; anything else (escapes,
    /// control bytes, UTF-8 to validate) is left to the full parser.
    bool string(std::string_view& out) {
        if (!eat('"')) {
            return false;
        }
        const auto begin = pos_;
        for (; pos_ < s_.size(); ++pos_) {
            const auto c = static_cast<unsigned char>(s_[pos_]);
            if (c == '"') {
                out = s_.substr(begin, pos_ - begin);
                ++pos_;
                return true;
            }
            if (c < 0x20 || c > 0x7e || c == '\\') {
                return false;
            }
        }
        return false;
    }

    std::string_view s_;
    std::size_t pos_ = 0;
};

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

namespace detail {

bool read_simple_task_line(std::string_view line, protocol::submit_item& out) {
    return simple_line_reader(line).read(out);
}

}  // namespace detail

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
        // Formatted only for an error: a million lines need a million fewer allocations.
        const auto where = [&] { return fmt::format("{}:{}", source, line_no); };
        if (line.size() > protocol::max_payload_bytes) {
            throw input_error(fmt::format("{}: line is {} bytes; a task may carry at most {}",
                                          where(),
                                          line.size(),
                                          protocol::max_payload_bytes));
        }
        if (plain_lines) {
            items.push_back({{}, std::move(line)});
            continue;
        }
        if (protocol::submit_item item; detail::read_simple_task_line(line, item)) {
            items.push_back(std::move(item));
            continue;
        }
        const auto j = parse_limited(line, where());
        if (!j.is_object() || !j.contains("payload")) {
            throw input_error(fmt::format(
                "{}: expected an object like {{\"key\": \"k1\", \"payload\": \"...\"}}", where()));
        }
        std::string key;
        if (auto k = j.find("key"); k != j.end() && !k->is_null()) {
            if (!k->is_string()) {
                throw input_error(fmt::format("{}: \"key\" must be a string", where()));
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
