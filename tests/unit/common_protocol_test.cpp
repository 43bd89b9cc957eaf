// Codec round trips with random messages, and what each kind of hostile input decodes to.
#include <gtest/gtest.h>

#include <random>

#include "taskvent/protocol.hpp"

namespace taskvent::protocol {
namespace {

class random_messages {
  public:
    explicit random_messages(std::uint32_t seed) : rng_(seed) {}

    std::string bytes(std::size_t max_len = 64) {
        std::string s(rng_() % (max_len + 1), '\0');
        for (auto& c : s) {
            c = static_cast<char>(rng_() & 0xFF);
        }
        return s;
    }
    std::uint64_t u64() { return (static_cast<std::uint64_t>(rng_()) << 32) | rng_(); }
    std::uint32_t u32() { return rng_(); }
    std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
    std::size_t count(std::size_t max = 20) { return rng_() % (max + 1); }

    std::vector<lease_ref> refs() {
        std::vector<lease_ref> v(count());
        for (auto& r : v) {
            r = {task_id{u64()}, u32()};
        }
        return v;
    }

    message any(msg_type t) {
        switch (t) {
            case msg_type::hello:
                return hello{bytes(), u32(), u32(), u32()};
            case msg_type::welcome:
                return welcome{u32(), u32(), u32()};
            case msg_type::report: {
                report r{u32(), refs(), refs(), {}, refs()};
                r.failed.resize(count());
                for (auto& f : r.failed) {
                    f = {task_id{u64()}, u32(), (rng_() & 1) != 0, bytes()};
                }
                return r;
            }
            case msg_type::tasks: {
                tasks m;
                m.items.resize(count());
                for (auto& item : m.items) {
                    item = {task_id{u64()}, u32(), bytes(), bytes(300), i64()};
                }
                return m;
            }
            case msg_type::results: {
                results m;
                m.items.resize(count());
                for (auto& r : m.items) {
                    r = {task_id{u64()},
                         u32(),
                         static_cast<outcome>(rng_() % 3),
                         bytes(),
                         bytes(300),
                         i64(),
                         i64(),
                         bytes()};
                }
                return m;
            }
            case msg_type::confirm: {
                confirm m;
                m.ids.resize(count(100));
                for (auto& id : m.ids) {
                    id = task_id{u64()};
                }
                return m;
            }
            case msg_type::submit: {
                submit m{u64(), u64(), {}};
                m.items.resize(count());
                for (auto& i : m.items) {
                    i = {bytes(), bytes(300)};
                }
                return m;
            }
            case msg_type::submit_ack: {
                submit_ack m{u64(), {}, u32()};
                m.ids.resize(count());
                for (auto& id : m.ids) {
                    id = task_id{u64()};
                }
                return m;
            }
            case msg_type::status_request:
                return status_request{u64()};
            case msg_type::status_reply:
                return status_reply{bytes(500)};
            case msg_type::sink_hello:
                return sink_hello{bytes()};
            case msg_type::heartbeat:
                return heartbeat{};
            case msg_type::bye:
                return bye{};
            case msg_type::reset:
                return reset{bytes()};
            case msg_type::error:
                return error{u32(), bytes()};
        }
        return heartbeat{};
    }

  private:
    std::mt19937 rng_;
};

constexpr msg_type all_types[] = {msg_type::hello,
                                  msg_type::welcome,
                                  msg_type::report,
                                  msg_type::tasks,
                                  msg_type::results,
                                  msg_type::confirm,
                                  msg_type::submit,
                                  msg_type::submit_ack,
                                  msg_type::status_request,
                                  msg_type::status_reply,
                                  msg_type::sink_hello,
                                  msg_type::heartbeat,
                                  msg_type::bye,
                                  msg_type::reset,
                                  msg_type::error};

TEST(protocol, every_message_type_survives_a_random_round_trip) {
    random_messages gen(20261203);
    for (int round = 0; round < 200; ++round) {
        for (auto t : all_types) {
            const auto original = gen.any(t);
            const auto f = encode(original);
            auto decoded = decode(f.header, f.body);
            ASSERT_TRUE(decoded.has_value()) << to_string(t) << ": " << decoded.error().message();
            EXPECT_EQ(type_of(decoded.value()), t);
            EXPECT_TRUE(decoded.value() == original) << to_string(t) << " round " << round;
        }
    }
}

TEST(protocol, tasks_encoded_from_views_decode_like_tasks) {
    const std::string key = "k", payload = "payload";
    const task_view views[] = {{task_id{1}, 1, key, payload, 5}, {task_id{2}, 3, "", "", -1}};
    std::string header, body;
    encode_tasks(views, header, body);
    auto decoded = decode(header, body);
    ASSERT_TRUE(decoded.has_value());
    const auto& t = std::get<tasks>(decoded.value());
    ASSERT_EQ(t.items.size(), 2u);
    EXPECT_EQ(t.items[0].payload, "payload");
    EXPECT_EQ(t.items[1].submitted_ns, -1);
}

std::string header_for(msg_type t, std::uint8_t v = version) {
    return {'T', 'V', static_cast<char>(v), static_cast<char>(t)};
}

TEST(protocol, rejects_headers_that_are_not_ours) {
    const auto body = encode(heartbeat{}).body;
    EXPECT_EQ(decode("TV", body).error(), errc::bad_header);
    EXPECT_EQ(decode("XV\x01\x0c", body).error(), errc::bad_header);
    EXPECT_EQ(decode(header_for(msg_type::heartbeat, 2), body).error(), errc::wrong_version);
    EXPECT_EQ(decode(std::string{'T', 'V', 1, 0}, body).error(), errc::unknown_type);
    EXPECT_EQ(decode(std::string{'T', 'V', 1, 99}, body).error(), errc::unknown_type);
}

TEST(protocol, a_length_bomb_is_refused_without_allocating_its_claim) {
    // array32 claiming four billion elements in five bytes.
    const std::string bomb("\xdd\xff\xff\xff\xff", 5);
    for (auto t : all_types) {
        EXPECT_FALSE(decode(header_for(t), bomb).has_value()) << to_string(t);
    }
    const std::string str_bomb("\xdb\xff\xff\xff\xff", 5);
    EXPECT_FALSE(decode(header_for(msg_type::status_reply), str_bomb).has_value());
}

TEST(protocol, a_deep_nesting_bomb_is_refused) {
    const std::string deep(100000, '\x91');
    const auto r = decode(header_for(msg_type::tasks), deep);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error(), errc::limit_exceeded);
}

TEST(protocol, truncated_and_padded_bodies_are_malformed) {
    random_messages gen(7);
    tasks m;
    m.items.push_back({task_id{1}, 1, "k", "payload", 1});
    const auto f = encode(m);
    for (std::size_t cut = 0; cut < f.body.size(); ++cut) {
        EXPECT_FALSE(decode(f.header, f.body.substr(0, cut)).has_value()) << "cut at " << cut;
    }
    EXPECT_EQ(decode(f.header, f.body + "x").error(), errc::malformed_body);
}

TEST(protocol, a_body_of_the_wrong_shape_is_malformed_not_a_crash) {
    // A valid msgpack body of another message type under each header.
    random_messages gen(99);
    int refused = 0;
    for (auto claimed : all_types) {
        for (auto actual : all_types) {
            const auto f = encode(gen.any(actual));
            auto r = decode(header_for(claimed), f.body);
            if (!r.has_value()) {
                EXPECT_EQ(r.error(), errc::malformed_body);
                ++refused;
            }
        }
    }
    EXPECT_GT(refused, 150);
}

TEST(protocol, random_bytes_never_crash_the_decoder) {
    random_messages gen(4242);
    for (int i = 0; i < 20000; ++i) {
        const auto t = all_types[static_cast<std::size_t>(i) % std::size(all_types)];
        (void)decode(header_for(t), gen.bytes(40));
    }
    SUCCEED();
}

}  // namespace
}  // namespace taskvent::protocol
