// Fuzzes taskvent::protocol::decode, the decoder every socket runs on what peers send.
//
// Each input is tried twice: as it comes (first four bytes the header, the rest the body),
// and behind a valid header whose type the first byte picks (the rest the body), so that
// the fuzzer reaches every body decoder without first having to guess the magic.
// Properties: decode never crashes and fails only with a taskvent error; what it accepts
// has the header's type, re-encodes to something that decodes to the same message, and
// decodes the same under tighter limits whenever those accept it at all.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "taskvent/error.hpp"
#include "taskvent/protocol.hpp"

namespace {

namespace protocol = taskvent::protocol;

/// Far below the defaults, so that the limit checks fire on small inputs too.
constexpr protocol::decode_limits tight_limits{
    .array = 8, .map = 2, .str = 32, .bin = 32, .ext = 0, .depth = 3};

void check_tasks_encoder(const protocol::tasks& m, const protocol::frames& expected) {
    // encode_tasks is the hot-path twin of encode for `tasks`: same bytes from views.
    std::vector<protocol::task_view> views;
    views.reserve(m.items.size());
    for (const auto& t : m.items) {
        views.push_back({t.id, t.attempt, t.key, t.payload, t.submitted_ns});
    }
    std::string header;
    std::string body;
    protocol::encode_tasks(views, header, body);
    TASKVENT_FUZZ_CHECK(header == expected.header && body == expected.body,
                        "encode_tasks writes the bytes encode writes");
}

void check_round_trip(const protocol::message& m) {
    const auto f = protocol::encode(m);
    const auto again = protocol::decode(f.header, f.body);
    if (!again) {
        taskvent::fuzz::fail("a re-encoded message decodes", again.error().message());
    }
    TASKVENT_FUZZ_CHECK(again.value() == m, "decode(encode(m)) == m");
    if (const auto* t = std::get_if<protocol::tasks>(&m)) {
        check_tasks_encoder(*t, f);
    }
}

void decode_and_check(std::span<const std::byte> header, std::span<const std::byte> body) {
    const auto m = protocol::decode(header, body);
    const auto tight = protocol::decode(header, body, tight_limits);

    if (!m) {
        TASKVENT_FUZZ_CHECK(m.error().category() == taskvent::taskvent_category(),
                            "decode fails only with taskvent errors");
        TASKVENT_FUZZ_CHECK(!tight, "what default limits refuse, tighter limits refuse too");
        return;
    }

    TASKVENT_FUZZ_CHECK(protocol::type_of(m.value()) == static_cast<protocol::msg_type>(header[3]),
                        "a decoded message has the type its header names");
    if (tight) {
        TASKVENT_FUZZ_CHECK(tight.value() == m.value(), "limits change whether, not what");
    }
    check_round_trip(m.value());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    taskvent::fuzz::quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto input = std::as_bytes(std::span(data, size));

    if (size >= protocol::header_size) {
        decode_and_check(input.first(protocol::header_size), input.subspan(protocol::header_size));
    }

    if (size >= 1) {
        constexpr auto types = static_cast<std::uint8_t>(protocol::msg_type::error);
        const auto type = static_cast<std::uint8_t>(1 + data[0] % types);
        const std::byte header[protocol::header_size] = {
            std::byte{'T'}, std::byte{'V'}, std::byte{protocol::version}, std::byte{type}};
        decode_and_check(header, input.subspan(1));
    }
    return 0;
}
