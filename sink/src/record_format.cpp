#include "taskvent/sink/record_format.hpp"

#include <array>
#include <charconv>
#include <cstdlib>

namespace taskvent::sink {
namespace {

/// Length of the valid UTF-8 sequence starting at p[0] (a byte >= 0x80), or 0 when the
/// bytes there are not one. Overlong forms, surrogates and code points past U+10FFFF are
/// invalid (RFC 3629), so whatever we write, a strict JSON parser accepts.
std::size_t utf8_sequence_length(const unsigned char* p, std::size_t available) {
    const unsigned char lead = p[0];
    std::size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }

    if (available < length || p[1] < low || p[1] > high) {
        return 0;
    }
    for (std::size_t i = 2; i < length; ++i) {
        if (p[i] < 0x80 || p[i] > 0xBF) {
            return 0;
        }
    }
    return length;
}

void append_escape(std::string& out, unsigned char c) {
    switch (c) {
        case '"':
            out += "\\\"";
            return;
        case '\\':
            out += "\\\\";
            return;
        case '\n':
            out += "\\n";
            return;
        case '\r':
            out += "\\r";
            return;
        case '\t':
            out += "\\t";
            return;
        case '\b':
            out += "\\b";
            return;
        case '\f':
            out += "\\f";
            return;
        default:
            static constexpr char hex[] = "0123456789abcdef";
            const char esc[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            out.append(esc, sizeof esc);
    }
}

void append_uint(std::string& out, std::uint64_t v) {
    std::array<char, 24> buf{};
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    out.append(buf.data(), r.ptr);
}

/// Milliseconds with three decimals, computed in integers so the text is exact.
void append_latency_ms(std::string& out, std::int64_t submitted_ns, std::int64_t now_ns) {
    if (submitted_ns <= 0) {
        out += "null";
        return;
    }
    const std::int64_t us = (now_ns - submitted_ns) / 1000;
    if (us < 0) {
        out += '-';  // clocks of two machines disagree; keep the sign rather than hide it
    }
    const auto abs_us = static_cast<std::uint64_t>(us < 0 ? -us : us);
    append_uint(out, abs_us / 1000);
    const auto frac = abs_us % 1000;
    const char digits[] = {'.',
                           static_cast<char>('0' + frac / 100),
                           static_cast<char>('0' + frac / 10 % 10),
                           static_cast<char>('0' + frac % 10)};
    out.append(digits, sizeof digits);
}

/// Skips a JSON string's contents up to (not past) its closing quote; npos if unterminated.
std::size_t find_string_end(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\') {
            ++i;
        } else if (s[i] == '"') {
            return i;
        }
    }
    return std::string_view::npos;
}

std::optional<protocol::outcome> parse_status(std::string_view s) {
    for (auto o : {protocol::outcome::ok, protocol::outcome::failed, protocol::outcome::dead}) {
        const auto name = protocol::to_string(o);
        if (s.starts_with(name) && s.size() > name.size() && s[name.size()] == '"') {
            return o;
        }
    }
    return std::nullopt;
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t run_start = 0;
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            ++i;
            continue;
        }
        if (c >= 0x80) {
            if (const auto len = utf8_sequence_length(p + i, n - i); len != 0) {
                i += len;
                continue;
            }
        }
        out.append(s.data() + run_start, i - run_start);
        append_escape(out, c);
        run_start = ++i;
    }
    out.append(s.data() + run_start, n - run_start);
}

void append_record(std::string& out, const protocol::result_item& item, std::int64_t now_ns) {
    out += R"({"id":)";
    append_uint(out, item.id.value);
    out += R"(,"key":")";
    append_json_escaped(out, item.key);
    out += R"(","status":")";
    out += protocol::to_string(item.status);
    out += R"(","attempts":)";
    append_uint(out, item.attempt);
    out += item.status == protocol::outcome::ok ? R"(,"result":")" : R"(,"error":")";
    append_json_escaped(out, item.body);
    out += R"(","latency_ms":)";
    append_latency_ms(out, item.submitted_ns, now_ns);
    out += R"(,"worker":")";
    append_json_escaped(out, item.worker);
    out += "\"}\n";
}

std::optional<record_head> parse_record_head(std::string_view line) {
    constexpr std::string_view id_field = R"({"id":)";
    if (!line.starts_with(id_field)) {
        return std::nullopt;
    }
    const char* first = line.data() + id_field.size();
    const char* last = line.data() + line.size();
    std::uint64_t id = 0;
    const auto [end, ec] = std::from_chars(first, last, id);
    if (ec != std::errc{} || end == last || *end != ',') {
        return std::nullopt;
    }

    record_head head{task_id{id}, std::nullopt};
    constexpr std::string_view key_field = R"(,"key":")";
    std::string_view rest(end, static_cast<std::size_t>(last - end));
    if (!rest.starts_with(key_field)) {
        return head;
    }
    rest.remove_prefix(key_field.size());
    const auto key_end = find_string_end(rest);
    constexpr std::string_view status_field = R"(","status":")";
    if (key_end == std::string_view::npos || !rest.substr(key_end).starts_with(status_field)) {
        return head;
    }
    head.status = parse_status(rest.substr(key_end + status_field.size()));
    return head;
}

}  // namespace taskvent::sink
