// The set of task ids the sink has recorded, used to drop every result after the first.
// Ids are dense (a sequence per ventilator epoch, see task_id), so the set keeps one bit
// per id in blocks of 4096 consecutive ids: ten million ids take about 1.3 MB where a
// node-based hash set takes some 400 MB, and a lookup is a bit test after one hash of
// the block number, skipped when the block is the one used last.
// Not thread-safe; owned by the sink's loop.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "taskvent/ids.hpp"

namespace taskvent::sink {

class id_set {
  public:
    bool contains(task_id id) const noexcept;
    /// Adds `id`; false when it was there already.
    bool insert(task_id id);
    /// Removes `id`; false when it was not there.
    bool erase(task_id id) noexcept;
    void clear() noexcept;
    std::size_t size() const noexcept { return size_; }
    /// Blocks allocated: what the set costs (each block_bytes) beyond its index.
    std::size_t blocks() const noexcept { return blocks_.size(); }

    static constexpr unsigned block_shift = 12;
    static constexpr std::size_t block_bytes = (std::size_t{1} << block_shift) / 8;

  private:
    using block = std::array<std::uint64_t, block_bytes / sizeof(std::uint64_t)>;

    block* find(std::uint64_t number) const noexcept;

    std::unordered_map<std::uint64_t, std::unique_ptr<block>> blocks_;
    // Results arrive in runs of neighbouring ids: most lookups hit the previous block.
    mutable std::uint64_t last_number_ = 0;
    mutable block* last_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace taskvent::sink
