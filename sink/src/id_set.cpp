#include "taskvent/sink/id_set.hpp"

namespace taskvent::sink {
namespace {

constexpr std::uint64_t offset_mask = (std::uint64_t{1} << id_set::block_shift) - 1;

struct position {
    std::uint64_t number;  ///< which block
    std::size_t word;
    std::uint64_t bit;
};

position locate(task_id id) noexcept {
    const auto offset = id.value & offset_mask;
    return {id.value >> id_set::block_shift,
            static_cast<std::size_t>(offset / 64),
            std::uint64_t{1} << (offset % 64)};
}

}  // namespace

id_set::block* id_set::find(std::uint64_t number) const noexcept {
    if (last_ != nullptr && last_number_ == number) {
        return last_;
    }
    const auto it = blocks_.find(number);
    if (it == blocks_.end()) {
        return nullptr;
    }
    last_number_ = number;
    last_ = it->second.get();
    return last_;
}

bool id_set::contains(task_id id) const noexcept {
    const auto p = locate(id);
    const auto* b = find(p.number);
    return b != nullptr && ((*b)[p.word] & p.bit) != 0;
}

bool id_set::insert(task_id id) {
    const auto p = locate(id);
    auto* b = find(p.number);
    if (b == nullptr) {
        auto& slot = blocks_[p.number];
        slot = std::make_unique<block>();  // value-initialised: all bits clear
        b = slot.get();
        last_number_ = p.number;
        last_ = b;
    }
    auto& word = (*b)[p.word];
    if ((word & p.bit) != 0) {
        return false;
    }
    word |= p.bit;
    ++size_;
    return true;
}

bool id_set::erase(task_id id) noexcept {
    const auto p = locate(id);
    auto* b = find(p.number);
    if (b == nullptr || ((*b)[p.word] & p.bit) == 0) {
        return false;
    }
    (*b)[p.word] &= ~p.bit;
    --size_;
    return true;
}

void id_set::clear() noexcept {
    blocks_.clear();
    last_ = nullptr;
    size_ = 0;
}

}  // namespace taskvent::sink
